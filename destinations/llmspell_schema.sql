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
