"""llmspell's own SQLite schema (tables, indexes, `_migrations` V1..V15), as its storage crate
creates it: the shape every source is checked against, the scratch database rollback reads a
backup into, and what the sample generator fills."""

from __future__ import annotations

import hashlib
import sqlite3

from core.model.components import SESSION_STATUSES, WORKFLOW_STATUSES

BASE_EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z; the sample's timestamps start here.
DAY = 86_400

_RANDOM_HEX_ID = "(lower(hex(randomblob(16))))"
_NOW = "(CAST(strftime('%s', 'now') AS INTEGER))"


def _in(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS _migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL,
    checksum TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS agent_states (
    state_id TEXT PRIMARY KEY NOT NULL DEFAULT {_RANDOM_HEX_ID},
    tenant_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    agent_type TEXT NOT NULL,
    state_data TEXT NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 1 CHECK (schema_version > 0),
    data_version INTEGER NOT NULL DEFAULT 1 CHECK (data_version > 0),
    checksum TEXT NOT NULL,
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    updated_at INTEGER NOT NULL DEFAULT {_NOW},
    UNIQUE (tenant_id, agent_id)
);
CREATE INDEX IF NOT EXISTS idx_agent_states_tenant ON agent_states(tenant_id);
CREATE INDEX IF NOT EXISTS idx_agent_states_type ON agent_states(agent_type);

CREATE TABLE IF NOT EXISTS workflow_states (
    tenant_id TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    workflow_name TEXT,
    state_data TEXT NOT NULL,
    current_step INTEGER NOT NULL DEFAULT 0 CHECK (current_step >= 0),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({_in(WORKFLOW_STATUSES)})),
    started_at INTEGER,
    completed_at INTEGER,
    last_updated INTEGER NOT NULL DEFAULT {_NOW},
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    PRIMARY KEY (tenant_id, workflow_id)
);
CREATE INDEX IF NOT EXISTS idx_workflow_states_tenant ON workflow_states(tenant_id);
CREATE INDEX IF NOT EXISTS idx_workflow_states_status ON workflow_states(status);

CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY NOT NULL DEFAULT {_RANDOM_HEX_ID},
    tenant_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    session_data TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ({_in(SESSION_STATUSES)})),
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    last_accessed_at INTEGER NOT NULL DEFAULT {_NOW},
    expires_at INTEGER,
    artifact_count INTEGER NOT NULL DEFAULT 0 CHECK (artifact_count >= 0),
    updated_at INTEGER NOT NULL DEFAULT {_NOW},
    UNIQUE (tenant_id, session_id)
);
CREATE INDEX IF NOT EXISTS idx_sessions_tenant ON sessions(tenant_id);
CREATE INDEX IF NOT EXISTS idx_sessions_status ON sessions(status);

CREATE TABLE IF NOT EXISTS kv_store (
    kv_id TEXT PRIMARY KEY NOT NULL DEFAULT {_RANDOM_HEX_ID},
    tenant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    metadata TEXT,
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    updated_at INTEGER NOT NULL DEFAULT {_NOW},
    UNIQUE (tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idx_kv_store_tenant ON kv_store(tenant_id);

CREATE TABLE IF NOT EXISTS vector_metadata (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    dimension INTEGER NOT NULL CHECK (dimension IN (384, 768, 1536, 3072)),
    metadata TEXT NOT NULL DEFAULT '{{}}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_vector_metadata_tenant_scope ON vector_metadata(tenant_id, scope);
CREATE INDEX IF NOT EXISTS idx_vector_metadata_dimension ON vector_metadata(dimension);

CREATE TABLE IF NOT EXISTS entities (
    entity_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    name TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{{}}',
    valid_time_start INTEGER NOT NULL,
    valid_time_end INTEGER NOT NULL DEFAULT 9999999999,
    transaction_time_start INTEGER NOT NULL DEFAULT {_NOW},
    transaction_time_end INTEGER NOT NULL DEFAULT 9999999999,
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    CHECK (valid_time_start < valid_time_end),
    CHECK (transaction_time_start < transaction_time_end)
);
CREATE INDEX IF NOT EXISTS idx_entities_tenant ON entities(tenant_id);

CREATE TABLE IF NOT EXISTS relationships (
    relationship_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    from_entity TEXT NOT NULL,
    to_entity TEXT NOT NULL,
    relationship_type TEXT NOT NULL,
    properties TEXT NOT NULL DEFAULT '{{}}',
    valid_time_start INTEGER NOT NULL,
    valid_time_end INTEGER NOT NULL DEFAULT 9999999999,
    transaction_time_start INTEGER NOT NULL DEFAULT {_NOW},
    transaction_time_end INTEGER NOT NULL DEFAULT 9999999999,
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    FOREIGN KEY (from_entity) REFERENCES entities(entity_id) ON DELETE CASCADE,
    FOREIGN KEY (to_entity) REFERENCES entities(entity_id) ON DELETE CASCADE,
    CHECK (valid_time_start < valid_time_end),
    CHECK (transaction_time_start < transaction_time_end)
);
CREATE INDEX IF NOT EXISTS idx_relationships_tenant ON relationships(tenant_id);
CREATE INDEX IF NOT EXISTS idx_relationships_from ON relationships(from_entity);

CREATE TABLE IF NOT EXISTS procedural_patterns (
    pattern_id TEXT PRIMARY KEY DEFAULT {_RANDOM_HEX_ID},
    tenant_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    frequency INTEGER NOT NULL DEFAULT 1,
    first_seen INTEGER NOT NULL DEFAULT {_NOW},
    last_seen INTEGER NOT NULL DEFAULT {_NOW},
    created_at INTEGER NOT NULL DEFAULT {_NOW},
    updated_at INTEGER NOT NULL DEFAULT {_NOW},
    UNIQUE(tenant_id, scope, key, value),
    CHECK (frequency > 0)
);
CREATE INDEX IF NOT EXISTS idx_procedural_patterns_tenant ON procedural_patterns(tenant_id);
"""

# llmspell's schema versions V1..V15, as recorded in `_migrations`.
MIGRATIONS = (
    "initial_schema",
    "vector_metadata",
    "vector_embeddings",
    "temporal_graph",
    "procedural_patterns",
    "agent_states",
    "kv_store",
    "workflow_states",
    "sessions",
    "artifacts",
    "event_log",
    "hook_history",
    "api_keys",
    "tenant_indexes",
    "session_artifact_count",
)


PHASE3_SQL = """
CREATE TABLE IF NOT EXISTS artifact_content (
    id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
    tenant_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    data BLOB NOT NULL,
    size_bytes INTEGER NOT NULL,
    is_compressed INTEGER NOT NULL DEFAULT 0,
    original_size_bytes INTEGER,
    reference_count INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    last_accessed_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    UNIQUE(tenant_id, content_hash),
    CHECK (reference_count > 0),
    CHECK (size_bytes <= 104857600)
);
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
    tenant_id TEXT NOT NULL,
    artifact_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    name TEXT NOT NULL,
    artifact_type TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    created_by TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    parent_artifact_id TEXT,
    tags TEXT,
    stored_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    updated_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    UNIQUE(tenant_id, artifact_id),
    UNIQUE(tenant_id, session_id, sequence),
    FOREIGN KEY (tenant_id, content_hash)
        REFERENCES artifact_content(tenant_id, content_hash) ON DELETE RESTRICT,
    FOREIGN KEY (tenant_id, session_id)
        REFERENCES sessions(tenant_id, session_id) ON DELETE CASCADE,
    CHECK (version > 0),
    CHECK (sequence >= 0)
);
CREATE INDEX IF NOT EXISTS idx_artifacts_content ON artifacts(tenant_id, content_hash);
CREATE TABLE IF NOT EXISTS event_log (
    id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    language TEXT NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE(tenant_id, event_id),
    UNIQUE(tenant_id, sequence)
);
CREATE INDEX IF NOT EXISTS idx_event_log_tenant_time ON event_log(tenant_id, timestamp DESC);
CREATE TABLE IF NOT EXISTS hook_history (
    id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(16)))),
    execution_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    hook_id TEXT NOT NULL,
    hook_type TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    hook_context BLOB NOT NULL,
    result_data TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    triggering_component TEXT NOT NULL,
    component_id TEXT NOT NULL,
    modified_operation INTEGER NOT NULL DEFAULT 0,
    tags TEXT DEFAULT '[]',
    retention_priority INTEGER NOT NULL DEFAULT 0,
    context_size INTEGER NOT NULL,
    contains_sensitive_data INTEGER NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now')),
    UNIQUE(tenant_id, execution_id)
);
CREATE INDEX IF NOT EXISTS idx_hook_history_tenant_time ON hook_history(tenant_id, timestamp DESC);
"""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create llmspell's SQLite tables, indexes and `_migrations` rows (V1..V15), in WAL mode,
    so the file looks like one the llmspell storage crate has migrated."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA_SQL)
    conn.executescript(PHASE3_SQL)
    rows = [
        (
            version,
            name,
            BASE_EPOCH - 90 * DAY + version * 3_600,
            hashlib.sha256(f"V{version}__{name}".encode()).hexdigest(),
        )
        for version, name in enumerate(MIGRATIONS, start=1)
    ]
    with conn:
        conn.executemany("INSERT OR IGNORE INTO _migrations VALUES (?, ?, ?, ?)", rows)
