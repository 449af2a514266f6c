-- The llmspell PostgreSQL tables, as llmspell's storage crate defines them (schema V1-V15).
-- Idempotent: every statement creates only what is missing and never drops or alters.
CREATE SCHEMA IF NOT EXISTS llmspell;

CREATE TABLE IF NOT EXISTS llmspell.agent_states (
    state_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    agent_id VARCHAR(255) NOT NULL,
    agent_type VARCHAR(100) NOT NULL,
    state_data JSONB NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 1,
    data_version INTEGER NOT NULL DEFAULT 1,
    checksum VARCHAR(64) NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT agent_states_tenant_agent_unique UNIQUE (tenant_id, agent_id),
    CONSTRAINT agent_states_schema_version_check CHECK (schema_version > 0),
    CONSTRAINT agent_states_data_version_check CHECK (data_version > 0)
);
CREATE INDEX IF NOT EXISTS idx_agent_states_tenant ON llmspell.agent_states (tenant_id);
CREATE INDEX IF NOT EXISTS idx_agent_states_type ON llmspell.agent_states (agent_type);
CREATE INDEX IF NOT EXISTS idx_agent_states_updated ON llmspell.agent_states (updated_at DESC);
CREATE INDEX IF NOT EXISTS idx_agent_states_data_gin ON llmspell.agent_states USING GIN (state_data);
CREATE INDEX IF NOT EXISTS idx_agent_states_execution_state
    ON llmspell.agent_states ((state_data->'state'->>'execution_state'));
CREATE INDEX IF NOT EXISTS idx_agent_states_metadata_name
    ON llmspell.agent_states ((state_data->'metadata'->>'name'));

CREATE TABLE IF NOT EXISTS llmspell.workflow_states (
    tenant_id VARCHAR(255) NOT NULL,
    workflow_id VARCHAR(255) NOT NULL,
    workflow_name VARCHAR(500),
    state_data JSONB NOT NULL,
    current_step INTEGER NOT NULL DEFAULT 0,
    status VARCHAR(20) NOT NULL DEFAULT 'pending',
    started_at TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    last_updated TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id),
    CONSTRAINT workflow_states_status_check
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT workflow_states_current_step_check CHECK (current_step >= 0)
);
CREATE INDEX IF NOT EXISTS idx_workflow_states_tenant ON llmspell.workflow_states (tenant_id);
CREATE INDEX IF NOT EXISTS idx_workflow_states_status ON llmspell.workflow_states (status);
CREATE INDEX IF NOT EXISTS idx_workflow_states_data_gin
    ON llmspell.workflow_states USING GIN (state_data);

CREATE TABLE IF NOT EXISTS llmspell.sessions (
    tenant_id VARCHAR(255) NOT NULL,
    session_id UUID NOT NULL,
    session_data JSONB NOT NULL,
    status VARCHAR(20) NOT NULL DEFAULT 'active',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_accessed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ,
    artifact_count INTEGER NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, session_id),
    CONSTRAINT sessions_status_check CHECK (status IN ('active', 'archived', 'expired')),
    CONSTRAINT sessions_artifact_count_check CHECK (artifact_count >= 0)
);
CREATE INDEX IF NOT EXISTS idx_sessions_tenant ON llmspell.sessions (tenant_id);
CREATE INDEX IF NOT EXISTS idx_sessions_status ON llmspell.sessions (status);
CREATE INDEX IF NOT EXISTS idx_sessions_expires ON llmspell.sessions (expires_at);
CREATE INDEX IF NOT EXISTS idx_sessions_data_gin ON llmspell.sessions USING GIN (session_data);

CREATE TABLE IF NOT EXISTS llmspell.kv_store (
    kv_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    key VARCHAR(500) NOT NULL,
    value BYTEA NOT NULL,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT kv_store_tenant_key_unique UNIQUE (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idx_kv_store_tenant ON llmspell.kv_store (tenant_id);

-- Phase 2: llmspell's memory stores (upstream V3 vector_embeddings, V4 temporal_graph with
-- V15's composite keys, V5 procedural_memory). pgvector provides vector(n) and HNSW: its
-- extension is created by target_schema.py first (the vector tables are skipped, with a
-- warning, when the role may not create it; a server without pgvector is refused).

CREATE TABLE IF NOT EXISTS llmspell.vector_embeddings_384 (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    scope VARCHAR(255) NOT NULL,
    embedding VECTOR(384) NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_vector_384_tenant ON llmspell.vector_embeddings_384 (tenant_id);
CREATE INDEX IF NOT EXISTS idx_vector_384_scope ON llmspell.vector_embeddings_384 (scope);
CREATE INDEX IF NOT EXISTS idx_vector_384_created ON llmspell.vector_embeddings_384 (created_at);
CREATE INDEX IF NOT EXISTS idx_vector_384_hnsw ON llmspell.vector_embeddings_384
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE TABLE IF NOT EXISTS llmspell.vector_embeddings_768 (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    scope VARCHAR(255) NOT NULL,
    embedding VECTOR(768) NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_vector_768_tenant ON llmspell.vector_embeddings_768 (tenant_id);
CREATE INDEX IF NOT EXISTS idx_vector_768_scope ON llmspell.vector_embeddings_768 (scope);
CREATE INDEX IF NOT EXISTS idx_vector_768_created ON llmspell.vector_embeddings_768 (created_at);
CREATE INDEX IF NOT EXISTS idx_vector_768_hnsw ON llmspell.vector_embeddings_768
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 128);
CREATE TABLE IF NOT EXISTS llmspell.vector_embeddings_1536 (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    scope VARCHAR(255) NOT NULL,
    embedding VECTOR(1536) NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_vector_1536_tenant ON llmspell.vector_embeddings_1536 (tenant_id);
CREATE INDEX IF NOT EXISTS idx_vector_1536_scope ON llmspell.vector_embeddings_1536 (scope);
CREATE INDEX IF NOT EXISTS idx_vector_1536_created ON llmspell.vector_embeddings_1536 (created_at);
CREATE INDEX IF NOT EXISTS idx_vector_1536_hnsw ON llmspell.vector_embeddings_1536
    USING hnsw (embedding vector_cosine_ops) WITH (m = 24, ef_construction = 256);
CREATE TABLE IF NOT EXISTS llmspell.vector_embeddings_3072 (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    scope VARCHAR(255) NOT NULL,
    embedding VECTOR(3072) NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_vector_3072_tenant ON llmspell.vector_embeddings_3072 (tenant_id);
CREATE INDEX IF NOT EXISTS idx_vector_3072_scope ON llmspell.vector_embeddings_3072 (scope);
CREATE INDEX IF NOT EXISTS idx_vector_3072_created ON llmspell.vector_embeddings_3072 (created_at);
-- No HNSW index on vector_embeddings_3072: pgvector indexes at most 2000 dimensions (as upstream V3).

CREATE TABLE IF NOT EXISTS llmspell.entities (
    entity_id UUID NOT NULL DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    entity_type VARCHAR(255) NOT NULL,
    name VARCHAR(500) NOT NULL,
    properties JSONB NOT NULL DEFAULT '{}',
    valid_time_start TIMESTAMPTZ NOT NULL,
    valid_time_end TIMESTAMPTZ NOT NULL DEFAULT 'infinity',
    transaction_time_start TIMESTAMPTZ NOT NULL DEFAULT now(),
    transaction_time_end TIMESTAMPTZ NOT NULL DEFAULT 'infinity',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, transaction_time_start),
    CONSTRAINT valid_time_range CHECK (valid_time_start < valid_time_end),
    CONSTRAINT tx_time_range CHECK (transaction_time_start < transaction_time_end)
);
CREATE INDEX IF NOT EXISTS idx_entities_tenant ON llmspell.entities (tenant_id);
CREATE INDEX IF NOT EXISTS idx_entities_type ON llmspell.entities (entity_type);
CREATE INDEX IF NOT EXISTS idx_entities_name ON llmspell.entities (name);
CREATE INDEX IF NOT EXISTS idx_entities_valid_time ON llmspell.entities
    USING GIST (tstzrange(valid_time_start, valid_time_end));
CREATE INDEX IF NOT EXISTS idx_entities_tx_time ON llmspell.entities
    USING GIST (tstzrange(transaction_time_start, transaction_time_end));
CREATE INDEX IF NOT EXISTS idx_entities_properties ON llmspell.entities USING GIN (properties);
CREATE INDEX IF NOT EXISTS idx_entities_id_lookup ON llmspell.entities (entity_id);

CREATE TABLE IF NOT EXISTS llmspell.relationships (
    relationship_id UUID NOT NULL DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    from_entity UUID NOT NULL,
    to_entity UUID NOT NULL,
    relationship_type VARCHAR(255) NOT NULL,
    properties JSONB NOT NULL DEFAULT '{}',
    valid_time_start TIMESTAMPTZ NOT NULL,
    valid_time_end TIMESTAMPTZ NOT NULL DEFAULT 'infinity',
    transaction_time_start TIMESTAMPTZ NOT NULL DEFAULT now(),
    transaction_time_end TIMESTAMPTZ NOT NULL DEFAULT 'infinity',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (relationship_id, transaction_time_start),
    CONSTRAINT valid_time_range CHECK (valid_time_start < valid_time_end),
    CONSTRAINT tx_time_range CHECK (transaction_time_start < transaction_time_end)
);
CREATE INDEX IF NOT EXISTS idx_relationships_tenant ON llmspell.relationships (tenant_id);
CREATE INDEX IF NOT EXISTS idx_relationships_from ON llmspell.relationships (from_entity);
CREATE INDEX IF NOT EXISTS idx_relationships_to ON llmspell.relationships (to_entity);
CREATE INDEX IF NOT EXISTS idx_relationships_type ON llmspell.relationships (relationship_type);
CREATE INDEX IF NOT EXISTS idx_relationships_from_type
    ON llmspell.relationships (from_entity, relationship_type);
CREATE INDEX IF NOT EXISTS idx_relationships_valid_time ON llmspell.relationships
    USING GIST (tstzrange(valid_time_start, valid_time_end));
CREATE INDEX IF NOT EXISTS idx_relationships_tx_time ON llmspell.relationships
    USING GIST (tstzrange(transaction_time_start, transaction_time_end));
CREATE INDEX IF NOT EXISTS idx_relationships_properties
    ON llmspell.relationships USING GIN (properties);
CREATE INDEX IF NOT EXISTS idx_relationships_id_lookup ON llmspell.relationships (relationship_id);

CREATE TABLE IF NOT EXISTS llmspell.procedural_patterns (
    pattern_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id VARCHAR(255) NOT NULL,
    scope VARCHAR(500) NOT NULL,
    key VARCHAR(500) NOT NULL,
    value TEXT NOT NULL,
    frequency INTEGER NOT NULL DEFAULT 1,
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT unique_procedural_pattern UNIQUE (tenant_id, scope, key, value),
    CONSTRAINT positive_frequency CHECK (frequency > 0)
);
CREATE INDEX IF NOT EXISTS idx_procedural_patterns_tenant ON llmspell.procedural_patterns (tenant_id);
CREATE INDEX IF NOT EXISTS idx_procedural_patterns_scope_key
    ON llmspell.procedural_patterns (scope, key);
CREATE INDEX IF NOT EXISTS idx_procedural_patterns_frequency
    ON llmspell.procedural_patterns (frequency DESC);
CREATE INDEX IF NOT EXISTS idx_procedural_patterns_last_seen
    ON llmspell.procedural_patterns (last_seen DESC);
CREATE INDEX IF NOT EXISTS idx_procedural_patterns_lookup
    ON llmspell.procedural_patterns (tenant_id, scope, key, value) WHERE frequency >= 3;

-- V11: the event log, partitioned by month on its timestamp. The partition functions and the
-- current months' partitions come with it (destinations/store_ddl.py).
CREATE TABLE IF NOT EXISTS llmspell.event_log (
    tenant_id VARCHAR(255) NOT NULL,
    event_id UUID NOT NULL,
    event_type VARCHAR(255) NOT NULL,
    correlation_id UUID NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    sequence BIGINT NOT NULL,
    language VARCHAR(50) NOT NULL,
    payload JSONB NOT NULL,
    PRIMARY KEY (tenant_id, timestamp, event_id)
) PARTITION BY RANGE (timestamp);
CREATE INDEX IF NOT EXISTS idx_event_log_correlation
    ON llmspell.event_log (correlation_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_event_log_type ON llmspell.event_log (event_type, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_event_log_sequence ON llmspell.event_log (sequence DESC);
CREATE INDEX IF NOT EXISTS idx_event_log_tenant_time
    ON llmspell.event_log (tenant_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_event_log_payload ON llmspell.event_log USING GIN (payload);

-- V13: hook execution history; execution_id is unique across tenants here.
CREATE TABLE IF NOT EXISTS llmspell.hook_history (
    execution_id UUID PRIMARY KEY,
    tenant_id VARCHAR(255) NOT NULL,
    hook_id VARCHAR(255) NOT NULL,
    hook_type VARCHAR(255) NOT NULL,
    correlation_id UUID NOT NULL,
    hook_context BYTEA NOT NULL,
    result_data JSONB NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    duration_ms INTEGER NOT NULL,
    triggering_component VARCHAR(255) NOT NULL,
    component_id VARCHAR(255) NOT NULL,
    modified_operation BOOLEAN NOT NULL DEFAULT false,
    tags TEXT[] DEFAULT ARRAY[]::TEXT[],
    retention_priority INTEGER NOT NULL DEFAULT 0,
    context_size INTEGER NOT NULL,
    contains_sensitive_data BOOLEAN NOT NULL DEFAULT false,
    metadata JSONB NOT NULL DEFAULT '{}'::JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_hook_history_hook_time
    ON llmspell.hook_history (hook_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_hook_history_correlation ON llmspell.hook_history (correlation_id);
CREATE INDEX IF NOT EXISTS idx_hook_history_type ON llmspell.hook_history (hook_type);
CREATE INDEX IF NOT EXISTS idx_hook_history_tenant_time
    ON llmspell.hook_history (tenant_id, timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_hook_history_retention
    ON llmspell.hook_history (retention_priority, timestamp);
CREATE INDEX IF NOT EXISTS idx_hook_history_metadata ON llmspell.hook_history USING GIN (metadata);
CREATE INDEX IF NOT EXISTS idx_hook_history_tags ON llmspell.hook_history USING GIN (tags);

-- V10: content-addressed artifact content (bytea below 1 MiB, a large object from 1 MiB) and
-- the artifacts referring to it; reference-count triggers in destinations/store_ddl.py.
CREATE TABLE IF NOT EXISTS llmspell.artifact_content (
    tenant_id VARCHAR(255) NOT NULL,
    content_hash VARCHAR(64) NOT NULL,
    storage_type VARCHAR(20) NOT NULL,
    data BYTEA,
    large_object_oid OID,
    size_bytes BIGINT NOT NULL,
    is_compressed BOOLEAN NOT NULL DEFAULT false,
    original_size_bytes BIGINT,
    reference_count INTEGER NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_accessed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, content_hash),
    CONSTRAINT valid_storage_type CHECK (storage_type IN ('bytea', 'large_object')),
    CONSTRAINT positive_reference_count CHECK (reference_count > 0),
    CONSTRAINT bytea_storage_valid CHECK (
        (storage_type = 'bytea' AND data IS NOT NULL AND large_object_oid IS NULL)
        OR (storage_type = 'large_object' AND large_object_oid IS NOT NULL AND data IS NULL)),
    CONSTRAINT max_artifact_size CHECK (size_bytes <= 104857600)
);
CREATE INDEX IF NOT EXISTS idx_artifact_content_tenant ON llmspell.artifact_content (tenant_id);
CREATE INDEX IF NOT EXISTS idx_artifact_content_refcount
    ON llmspell.artifact_content (reference_count) WHERE reference_count = 0;
CREATE INDEX IF NOT EXISTS idx_artifact_content_large_objects
    ON llmspell.artifact_content (large_object_oid) WHERE large_object_oid IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_artifact_content_accessed
    ON llmspell.artifact_content (last_accessed_at DESC);

CREATE TABLE IF NOT EXISTS llmspell.artifacts (
    tenant_id VARCHAR(255) NOT NULL,
    artifact_id VARCHAR(512) NOT NULL,
    session_id UUID NOT NULL,
    sequence BIGINT NOT NULL,
    content_hash VARCHAR(64) NOT NULL,
    metadata JSONB NOT NULL,
    name VARCHAR(255) NOT NULL,
    artifact_type VARCHAR(50) NOT NULL,
    mime_type VARCHAR(255) NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by VARCHAR(255),
    version INTEGER NOT NULL DEFAULT 1,
    parent_artifact_id VARCHAR(512),
    tags TEXT[],
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, artifact_id),
    FOREIGN KEY (tenant_id, content_hash)
        REFERENCES llmspell.artifact_content (tenant_id, content_hash) ON DELETE RESTRICT,
    FOREIGN KEY (tenant_id, session_id)
        REFERENCES llmspell.sessions (tenant_id, session_id) ON DELETE CASCADE,
    CONSTRAINT unique_session_sequence UNIQUE (tenant_id, session_id, sequence),
    CONSTRAINT positive_version CHECK (version > 0),
    CONSTRAINT non_negative_sequence CHECK (sequence >= 0)
);
CREATE INDEX IF NOT EXISTS idx_artifacts_session
    ON llmspell.artifacts (tenant_id, session_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_artifacts_type ON llmspell.artifacts (artifact_type, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_artifacts_content ON llmspell.artifacts (tenant_id, content_hash);
CREATE INDEX IF NOT EXISTS idx_artifacts_name ON llmspell.artifacts (name);
CREATE INDEX IF NOT EXISTS idx_artifacts_created ON llmspell.artifacts (created_at DESC);
CREATE INDEX IF NOT EXISTS idx_artifacts_size ON llmspell.artifacts (size_bytes DESC);
CREATE INDEX IF NOT EXISTS idx_artifacts_tags ON llmspell.artifacts USING GIN (tags);
CREATE INDEX IF NOT EXISTS idx_artifacts_metadata ON llmspell.artifacts USING GIN (metadata);
CREATE INDEX IF NOT EXISTS idx_artifacts_tenant_type
    ON llmspell.artifacts (tenant_id, artifact_type, created_at DESC);
