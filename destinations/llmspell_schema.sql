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
-- warning, when the role may not create it).

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
