"""The one description of every migrated component.

Reader, pre-flight checks, staging DDL, the INSERT that converts types, backups and the
validation queries are all derived from these definitions, so a column is described once.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import UsageError

# Column kinds: how a SQLite value maps to its PostgreSQL column.
TEXT = "text"  # TEXT -> VARCHAR(n)/TEXT
JSON = "json"  # TEXT holding JSON -> JSONB
EPOCH = "epoch"  # INTEGER unix seconds -> TIMESTAMPTZ
HEXID = "hexid"  # TEXT 32 hex chars -> UUID
UUID = "uuid"  # TEXT uuid (session id) -> UUID
INT = "int"  # INTEGER -> INTEGER
BLOB = "blob"  # BLOB -> BYTEA
VECTOR = "vector"  # BLOB: JSON text of an f32 list, or raw little-endian f32 -> vector(n)
EPOCH_OPEN = "epoch_open"  # INTEGER unix seconds, 9999999999 = open end -> 'infinity'
SCOPE = "scope"  # llmspell's SQLite scope namespace -> StateScope's display form
BOOL = "bool"  # INTEGER 0/1 -> BOOLEAN
BIGINT = "bigint"  # INTEGER -> BIGINT
TEXT_ARRAY = "text_array"  # TEXT holding a JSON array of strings -> TEXT[]


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    nullable: bool = False
    max_length: int | None = None
    minimum: int | None = None  # for INT columns: CHECK (col >= minimum)
    allowed: tuple[str, ...] | None = None  # for status columns: CHECK (col IN ...)
    dimension: int | None = None  # for VECTOR columns: vector(dimension)
    # TEXT_ARRAY only: NULL is stored as an empty array (llmspell's reader needs one).
    empty_when_null: bool = False

    @property
    def pg_type(self) -> str:
        if self.kind in (TEXT, SCOPE):
            return f"VARCHAR({self.max_length})" if self.max_length else "TEXT"
        if self.kind == VECTOR:
            return f"VECTOR({self.dimension})"
        return {
            JSON: "JSONB",
            EPOCH: "TIMESTAMPTZ",
            EPOCH_OPEN: "TIMESTAMPTZ",
            HEXID: "UUID",
            UUID: "UUID",
            INT: "INTEGER",
            BLOB: "BYTEA",
            BOOL: "BOOLEAN",
            BIGINT: "BIGINT",
            TEXT_ARRAY: "TEXT[]",
        }[self.kind]

    @property
    def match_type(self) -> str:
        """The type to compare this column with when it joins a key list: its type without a
        length (VARCHAR(n) compares as TEXT). Under row-level security PostgreSQL uses a join
        condition for an index only if it is leakproof; a cast to VARCHAR(n), or from text
        to UUID, applied to a column of the other side is not, and the join falls back to a
        scan of the tenant's rows per key (quadratic; seen as minutes at 200k records)."""
        return "TEXT" if self.pg_type.startswith("VARCHAR") else self.pg_type


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
    def json_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == JSON]


_TENANT = Column("tenant_id", TEXT, max_length=255)

AGENT_STATE = Component(
    name="agent_state",
    sqlite_table="agent_states",
    pg_table="agent_states",
    key_column="agent_id",
    key_sql="'agent:' || agent_id",  # as llmspell's SQLite backend lists it
    columns=(
        Column("state_id", HEXID),
        _TENANT,
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
        _TENANT,
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
        _TENANT,
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
        _TENANT,
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
        _TENANT,
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
        _TENANT,
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
        _TENANT,
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
        _TENANT,
        Column("content_hash", TEXT, max_length=64),
        Column("size_bytes", BIGINT),
        Column("is_compressed", BOOL),
        Column("original_size_bytes", BIGINT, nullable=True),
        Column("created_at", EPOCH),
    ),
)

COMPONENTS: dict[str, Component] = {
    c.name: c for c in (AGENT_STATE, WORKFLOW_STATE, SESSIONS, KV_STORE, EVENTS, HOOKS, ARTIFACTS)
}
# Stores moved as several parts (one per PostgreSQL table): CLI name -> part names.
GROUPS: dict[str, tuple[str, ...]] = {}


def register(*comps: Component) -> None:
    """Add components (store modules call this); parts of a group are listed under it."""
    for comp in comps:
        COMPONENTS[comp.name] = comp
        if comp.group:
            GROUPS[comp.group] = (*GROUPS.get(comp.group, ()), comp.name)


from sources import memory_stores  # noqa: E402  (registers the memory stores)

del memory_stores
# The names a user passes: plain components and groups, in registry order.
SUPPORTED = tuple(dict.fromkeys(c.group or c.name for c in COMPONENTS.values()))
# Components the llmspell guide names for later phases: recognised, refused with a clear message.
LATER_PHASES: dict[str, str] = {}
# The SQLite tables each not-yet-migrated store keeps its records in (the first one counts
# them), so `plan` can say what a plan leaves behind.
LATER_TABLES: dict[str, tuple[str, ...]] = {}
ALL = "all"


def get(name: str) -> Component:
    """The component called `name`, or a UsageError naming the supported ones."""
    if name in COMPONENTS:
        return COMPONENTS[name]
    if name in GROUPS:
        raise UsageError(
            f"{name} is migrated in parts: {', '.join(GROUPS[name])}",
            f"Make the plan with `plan --components {name}`; it lists the parts.",
        )
    if name == "api_keys":
        raise UsageError(
            "api_keys: llmspell keeps no API keys in SQLite, so there is nothing to migrate",
            "llmspell holds API keys in memory, or in PostgreSQL itself: re-create them with "
            "llmspell against the PostgreSQL backend after the cutover.",
        )
    phase = LATER_PHASES.get(name)
    hint = (
        f"{name} is planned for {phase}; migrate it with llmspell itself for now."
        if phase
        else "Check the component name's spelling."
    )
    raise UsageError(f"Only {', '.join(SUPPORTED)} are supported. Got: {name}", hint)


def parse_list(text: str) -> list[Component]:
    """Parse `agent_state,sessions` into components, refusing unknown and repeated names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == [ALL]:
        return list(COMPONENTS.values())
    if len(set(names)) == len(names):
        names = [part for n in names for part in GROUPS.get(n, (n,))]
    if not names:
        raise UsageError(
            "No component given.", f"Pass --components with any of: {', '.join(SUPPORTED)}"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"A component is named twice: {text}", "Name each component once.")
    return [get(n) for n in names]
