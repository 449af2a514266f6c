"""What an llmspell component is, and llmspell's stores of state, sessions, events, hooks and
artifacts (the memory stores are in `core.model.memory`; `core.model.registry` lists them all).

Reader, pre-flight checks, staging DDL, the INSERT that converts types, backups and the
validation queries are all derived from these definitions, so a column is described once.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.model.canonical import uuid_key
from core.model.kinds import (
    BIGINT,
    BLOB,
    BOOL,
    EPOCH,
    HEXID,
    INT,
    JSON,
    TEXT,
    TEXT_ARRAY,
    UUID,
    VECTOR,
    Column,
)


@dataclass(frozen=True)
class Component:
    name: str
    sqlite_table: str
    pg_table: str  # unqualified, in schema `llmspell`
    key_column: str  # natural key with tenant_id
    key_sql: str  # SQLite expression giving the key llmspell's SQLite backend lists
    columns: tuple[Column, ...]
    # SQL giving the rows when they are not one table's (a join): `{p}` is the table prefix
    # (`src.` in DuckDB); an optional table may be missing: its empty stand-in replaces it.
    source_sql: str | None = None
    optional_tables: tuple[tuple[str, str], ...] = ()  # (table, empty stand-in SELECT)
    # ON CONFLICT target that skips a re-delivered row (default: tenant_id and the key)
    conflict: tuple[str, ...] | None = None
    group: str | None = None  # the CLI name this component is a part of (episodic_memory)

    def source_from(self, prefix: str = "", tables: set[str] | None = None) -> str:
        """The FROM item that yields this component's source rows (SQLite or DuckDB)."""
        if self.source_sql is None:
            return f"{prefix}{self.sqlite_table}"
        sql = self.source_sql
        for table, stand_in in self.optional_tables:
            if tables is not None and table not in tables:
                sql = sql.replace(f"{{p}}{table}", f"({stand_in})")
        return f"({sql.replace('{p}', prefix)}) AS src_rows"

    # The key is unique across tenants in PostgreSQL (not only per tenant as in SQLite).
    global_key: bool = False
    # Copied by its own store module after the dlt copy, not by the dlt copy itself
    # (artifacts: blobs are streamed, and rows need their sessions and content first).
    own_copy: bool = False

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def qualified_table(self) -> str:
        return f"llmspell.{self.pg_table}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    @property
    def vector_column(self) -> Column | None:
        """The embedding column (memory's vector parts), for the nearest-neighbour check."""
        return next((c for c in self.columns if c.kind is VECTOR), None)

    @property
    def json_columns(self) -> list[str]:
        """The columns compared as JSON documents (structurally, when their prints differ)."""
        return [c.name for c in self.columns if c.kind.difference]


# Every component's tenant column (llmspell's row-level security keys on it).
TENANT = Column("tenant_id", TEXT, max_length=255)

AGENT_STATE = Component(
    name="agent_state",
    sqlite_table="agent_states",
    pg_table="agent_states",
    key_column="agent_id",
    key_sql="'agent:' || agent_id",  # as llmspell's SQLite backend lists it
    columns=(
        Column("state_id", HEXID),
        TENANT,
        Column("agent_id", TEXT, max_length=255),
        Column("agent_type", TEXT, max_length=100),
        Column("state_data", JSON),
        Column("schema_version", INT, minimum=1),
        Column("data_version", INT, minimum=1),
        Column("checksum", TEXT, max_length=64),
        Column("created_at", EPOCH),
        Column("updated_at", EPOCH),
    ),
)

WORKFLOW_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
WORKFLOW_STATE = Component(
    name="workflow_state",
    sqlite_table="workflow_states",
    pg_table="workflow_states",
    key_column="workflow_id",
    key_sql="'custom:workflow_' || workflow_id || ':state'",
    columns=(
        TENANT,
        Column("workflow_id", TEXT, max_length=255),
        Column("workflow_name", TEXT, nullable=True, max_length=500),
        Column("state_data", JSON),
        Column("current_step", INT, minimum=0),
        Column("status", TEXT, max_length=20, allowed=WORKFLOW_STATUSES),
        Column("started_at", EPOCH, nullable=True),
        Column("completed_at", EPOCH, nullable=True),
        Column("last_updated", EPOCH),
        Column("created_at", EPOCH),
    ),
)

SESSION_STATUSES = ("active", "archived", "expired")
SESSIONS = Component(
    name="sessions",
    sqlite_table="sessions",
    pg_table="sessions",
    key_column="session_id",
    key_sql="'session:' || session_id",
    columns=(
        TENANT,
        Column("session_id", UUID),
        Column("session_data", JSON),
        Column("status", TEXT, max_length=20, allowed=SESSION_STATUSES),
        Column("created_at", EPOCH),
        Column("last_accessed_at", EPOCH),
        Column("expires_at", EPOCH, nullable=True),
        Column("artifact_count", INT, minimum=0),
        Column("updated_at", EPOCH),
    ),
)

KV_STORE = Component(
    name="kv_store",
    sqlite_table="kv_store",
    pg_table="kv_store",
    key_column="key",
    key_sql="key",
    columns=(
        Column("kv_id", HEXID),
        TENANT,
        Column("key", TEXT, max_length=500),
        Column("value", BLOB),
        Column("metadata", JSON, nullable=True),
        Column("created_at", EPOCH),
        Column("updated_at", EPOCH),
    ),
)

# Every event is kept with its source's id, type, correlation id, whole-second time and
# per-tenant sequence (SQLite's; the PostgreSQL writer would have taken the payload's global
# sequence and full-precision time, which SQLite did not keep).
EVENTS = Component(
    name="events",
    sqlite_table="event_log",
    pg_table="event_log",
    key_column="event_id",
    key_sql="'event:' || event_id",
    columns=(
        TENANT,
        Column("event_id", UUID),
        Column("event_type", TEXT, max_length=255),
        Column("correlation_id", UUID),
        Column("timestamp", EPOCH),
        Column("sequence", BIGINT),
        Column("language", TEXT, max_length=50),
        Column("payload", JSON),
    ),
    # PostgreSQL's primary key includes the partition column.
    conflict=("tenant_id", "timestamp", "event_id"),
)

HOOKS = Component(
    name="hooks",
    sqlite_table="hook_history",
    pg_table="hook_history",
    key_column="execution_id",
    key_sql="'hook:' || execution_id",
    columns=(
        Column("execution_id", UUID),
        TENANT,
        Column("hook_id", TEXT, max_length=255),
        Column("hook_type", TEXT, max_length=255),
        Column("correlation_id", UUID),
        Column("hook_context", BLOB),  # lz4, size-prepended: copied byte for byte
        Column("result_data", JSON),
        Column("timestamp", EPOCH),
        Column("duration_ms", INT),
        Column("triggering_component", TEXT, max_length=255),
        Column("component_id", TEXT, max_length=255),
        Column("modified_operation", BOOL),
        Column("tags", TEXT_ARRAY, nullable=True, empty_when_null=True),
        Column("retention_priority", INT),
        Column("context_size", INT),
        Column("contains_sensitive_data", BOOL),
        Column("metadata", JSON),
        Column("created_at", EPOCH),
    ),
    conflict=("execution_id",),
    global_key=True,
)

# Artifacts: `artifacts` rows refer to a session and to content-addressed `artifact_content`.
# The component's records are the artifacts; their content travels with them (see
# destinations/artifact_writer.py): bytea below 1 MiB, a large object from 1 MiB.
ARTIFACTS = Component(
    name="artifacts",
    sqlite_table="artifacts",
    pg_table="artifacts",
    key_column="artifact_id",
    key_sql="artifact_id",
    columns=(
        TENANT,
        Column("artifact_id", TEXT, max_length=512),
        Column("session_id", UUID),
        Column("sequence", BIGINT),
        Column("content_hash", TEXT, max_length=64),
        Column("metadata", JSON),
        Column("name", TEXT, max_length=255),
        Column("artifact_type", TEXT, max_length=50),
        Column("mime_type", TEXT, max_length=255),
        Column("size_bytes", BIGINT),
        Column("created_at", EPOCH),
        Column("created_by", TEXT, nullable=True, max_length=255),
        Column("version", INT, minimum=1),
        Column("parent_artifact_id", TEXT, nullable=True, max_length=512),
        Column("tags", TEXT_ARRAY, nullable=True),
        Column("stored_at", EPOCH),
        Column("updated_at", EPOCH),
    ),
    own_copy=True,
)
# The content rows, without `data` (streamed on its own) and without the columns PostgreSQL's
# convention sets: storage_type (by size), reference_count (1 + one per artifact, kept by
# its triggers) and last_accessed_at (set by the same triggers).
ARTIFACT_CONTENT = Component(
    name="artifact_content",
    sqlite_table="artifact_content",
    pg_table="artifact_content",
    key_column="content_hash",
    key_sql="content_hash",
    columns=(
        TENANT,
        Column("content_hash", TEXT, max_length=64),
        Column("size_bytes", BIGINT),
        Column("is_compressed", BOOL),
        Column("original_size_bytes", BIGINT, nullable=True),
        Column("created_at", EPOCH),
    ),
)


def natural_key_of(comp: Component):
    """A function giving a source row's (`(llmspell_key, *columns)`) natural key in the
    target's text form (sessions' UUIDs canonical), the column's position looked up once."""
    at = 1 + comp.column_names.index(comp.key_column)
    if comp.column(comp.key_column).kind.is_uuid:
        return lambda row: uuid_key(row[at])
    return lambda row: row[at]
