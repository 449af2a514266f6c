"""Tenant remapping: many installations into one PostgreSQL.

Every installation uses the same tenant names (the kernel's `system`, applications'
`default`), so consolidating several into one server moves each installation's tenants to
names of their own. A tenant map (`{source tenant: target tenant}`; unmapped tenants keep
their name) is applied to the run's private snapshot right after it is taken
(`SourceDB(..., tenant_map=...)`), never to the user's file: every stage after it (pre-flight,
backup, copy, validation, read-back, sync, rollback's metadata) sees the target tenants.

What moves with the tenant:
- every `tenant_id` column of every table of the snapshot;
- the strings llmspell derives from a tenant: memory scopes naming it (`tenant:<t>`, with any
  `:`-continuation, also in StateScope's display form `custom:tenant:<t>`), in
  `vector_metadata.scope` and `procedural_patterns.scope`, and kv_store keys of llmspell's
  tenant-scoped state (`tenant:<t>:...`, `custom:tenant:<t>:...`).
Nothing else in a value changes (JSON payloads that mention a tenant are the application's
data and stay as they are).

Refused (exit 2, naming it): a target tenant llmspell could not use (empty, longer than the
tenant columns' VARCHAR(255), a NUL, invalid UTF-8 or control characters, surrounding
whitespace), and two source tenants mapped onto one target tenant whose keys collide.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping

from core.errors import PlanError, SourceError

TENANT_MAX = 255  # llmspell's tenant_id columns are VARCHAR(255)
# Tables whose scope column names a tenant (StateScope::Custom("tenant:<t>")).
SCOPE_COLUMNS = {"vector_metadata": "scope", "procedural_patterns": "scope"}
# Tables whose key column may embed a tenant (llmspell's tenant-scoped state keys).
KEY_COLUMNS = {"kv_store": "key"}
_DERIVED_PREFIXES = ("tenant:", "custom:tenant:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def tenant_problem(tenant: object) -> str | None:
    """Why `tenant` cannot be a tenant id llmspell uses, or None."""
    if not isinstance(tenant, str):
        return f"{tenant!r} is not a string"
    if tenant == "":
        return "an empty tenant id (llmspell's empty tenant means 'no tenant')"
    if tenant != tenant.strip():
        return f"{tenant!r} has leading or trailing whitespace"
    if len(tenant) > TENANT_MAX:
        return (
            f"{tenant[:40]!r}... is {len(tenant)} characters, over the tenant columns' "
            f"VARCHAR({TENANT_MAX})"
        )
    if _CONTROL.search(tenant):
        return f"{tenant!r} holds a control character (NUL, newline, ...)"
    try:
        tenant.encode("utf-8")
    except UnicodeEncodeError:
        return f"{tenant!r} is not valid UTF-8"
    return None


def check_map(tenant_map: Mapping[str, str] | None, where: str = "target.tenant_map") -> dict:
    """The map as a plain dict, or a PlanError naming the first entry llmspell could not use."""
    if not tenant_map:
        return {}
    if not isinstance(tenant_map, Mapping):
        raise PlanError(
            f"{where}: must map source tenants to target tenants",
            "Write it as {system: team-a-system, default: team-a} (or --tenant-map SRC=DST).",
        )
    out: dict[str, str] = {}
    for src, dst in tenant_map.items():
        if not isinstance(src, str) or src == "":
            raise PlanError(
                f"{where}: source tenant {src!r} is not a tenant id",
                "Quote the source tenant's name as the source database holds it.",
            )
        problem = tenant_problem(dst)
        if problem:
            raise PlanError(
                f"{where}: target tenant for {src!r} is invalid: {problem}",
                f"Map {src!r} to a non-empty tenant id of at most {TENANT_MAX} characters.",
            )
        out[src] = dst
    return out


def parse_cli(items: Iterable[str] | None) -> dict[str, str]:
    """`--tenant-map SRC=DST` (repeatable) as a map; a source given twice is refused."""
    out: dict[str, str] = {}
    for item in items or []:
        src, sep, dst = item.partition("=")
        if not sep or not src:
            raise PlanError(
                f"--tenant-map {item!r}: expected SRC=DST",
                "Write --tenant-map system=team-a-system (repeat for each tenant).",
            )
        if src in out and out[src] != dst:
            raise PlanError(
                f"--tenant-map maps {src!r} twice ({out[src]!r} and {dst!r})",
                "Map each source tenant once.",
            )
        out[src] = dst
    return check_map(out, "--tenant-map")


def prefixed(tenants: Iterable[str], prefix: str) -> dict[str, str]:
    """`tenant_prefix`'s map: every tenant gets the prefix."""
    return {t: f"{prefix}{t}" for t in tenants}


def mapped(tenant: str, tenant_map: Mapping[str, str] | None) -> str:
    return (tenant_map or {}).get(tenant, tenant)


def mapped_list(tenants: Iterable[str] | None, tenant_map: Mapping[str, str] | None):
    if tenants is None:
        return None
    return list(dict.fromkeys(mapped(t, tenant_map) for t in tenants))


def derived(value: str, tenant_map: Mapping[str, str]) -> str:
    """A scope or key naming a source tenant, with the tenant moved (else unchanged)."""
    for prefix in _DERIVED_PREFIXES:
        if value.startswith(prefix):
            rest = value[len(prefix) :]
            for src, dst in tenant_map.items():
                if rest == src or rest.startswith(src + ":"):
                    return prefix + dst + rest[len(src) :]
    return value


# -- applying a map to a snapshot -----------------------------------------------------------
def _tables_with(conn: sqlite3.Connection, column: str) -> list[str]:
    out = []
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'"
    ).fetchall():
        if column in [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]:
            out.append(name)
    return out


def _sql_derived(col: str) -> str:
    """SQL applying `derived` to `col` through the temp table `_tmap(src, dst)`."""
    cases = []
    for prefix in _DERIVED_PREFIXES:
        n = len(prefix)
        cases.append(
            f"WHEN substr({col}, 1, {n}) = '{prefix}' AND EXISTS (SELECT 1 FROM temp._tmap m "
            f"WHERE substr({col}, {n + 1}) = m.src OR substr({col}, {n + 1}, length(m.src) + 1)"
            f" = m.src || ':') THEN '{prefix}' || (SELECT m.dst || substr({col}, {n + 1} + "
            f"length(m.src)) FROM temp._tmap m WHERE substr({col}, {n + 1}) = m.src OR "
            f"substr({col}, {n + 1}, length(m.src) + 1) = m.src || ':' "
            "ORDER BY length(m.src) DESC LIMIT 1)"
        )
    return f"CASE {' '.join(cases)} ELSE {col} END"


def apply(
    snap_path,
    tenant_map: Mapping[str, str],
    keys: Mapping[str, tuple[str, ...]],
    shown_as: str,
) -> dict[str, dict[str, int]]:
    """Move the snapshot at `snap_path` to target tenants (in one transaction). `keys`:
    table -> the columns naming a record (tenant and key), for the collision check. Returns
    table -> source tenant -> rows moved."""
    tenant_map = {s: d for s, d in tenant_map.items() if s != d}
    if not tenant_map:
        return {}
    conn = sqlite3.connect(snap_path)
    conn.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    moved: dict[str, dict[str, int]] = {}
    try:
        conn.execute("CREATE TEMP TABLE _tmap (src TEXT PRIMARY KEY, dst TEXT NOT NULL)")
        conn.executemany("INSERT INTO temp._tmap VALUES (?, ?)", list(tenant_map.items()))
        tables = _tables_with(conn, "tenant_id")
        _refuse_collisions(conn, tables, keys, shown_as)
        # Two steps, so a swap ({a: b, b: a}) never meets a UNIQUE constraint half-way:
        # changed values are first marked (char(1) before them), then unmarked.
        for table in tables:
            per = conn.execute(
                f'SELECT tenant_id, count(*) FROM "{table}" WHERE tenant_id IN '
                "(SELECT src FROM temp._tmap) GROUP BY tenant_id"
            ).fetchall()
            if per:
                moved[table] = {t: n for t, n in per}
            cols = [("tenant_id", "coalesce((SELECT dst FROM temp._tmap WHERE src = tenant_id), "
                     "tenant_id)")]  # fmt: skip
            derived_col = SCOPE_COLUMNS.get(table) or KEY_COLUMNS.get(table)
            if derived_col:
                cols.append((f'"{derived_col}"', _sql_derived(derived_col)))
            for col, expr in cols:
                conn.execute("DROP TABLE IF EXISTS temp._marked")
                conn.execute(
                    f'CREATE TEMP TABLE _marked AS SELECT rowid AS r FROM "{table}" '
                    f"WHERE ({expr}) IS NOT {col}"
                )
                conn.execute(
                    f'UPDATE "{table}" SET {col} = char(1) || ({expr}) '
                    "WHERE rowid IN (SELECT r FROM temp._marked)"
                )
                conn.execute(
                    f'UPDATE "{table}" SET {col} = substr({col}, 2) '
                    "WHERE rowid IN (SELECT r FROM temp._marked)"
                )
        conn.commit()
    except sqlite3.IntegrityError as exc:
        conn.rollback()
        raise SourceError(
            f"{shown_as}: the tenant map makes records collide: {exc}",
            "Map the colliding source tenants onto different target tenants.",
        ) from None
    finally:
        conn.close()
    return moved


def _refuse_collisions(
    conn: sqlite3.Connection,
    tables: list[str],
    keys: Mapping[str, tuple[str, ...]],
    shown_as: str,
) -> None:
    """Two source tenants mapped onto one target tenant must hold no key in common (a key
    naming a tenant is compared after it moved too)."""
    clashes: list[str] = []
    for table in tables:
        key = keys.get(table)
        if not key or "tenant_id" not in key:
            continue
        others = [c for c in key if c != "tenant_id"]
        derived_col = SCOPE_COLUMNS.get(table) or KEY_COLUMNS.get(table)
        exprs = [_sql_derived(c) if c == derived_col else f'"{c}"' for c in others]
        new_tenant = "coalesce((SELECT dst FROM temp._tmap WHERE src = tenant_id), tenant_id)"
        select = ", ".join([f"{new_tenant} AS t", *(f"{e} AS k{i}" for i, e in enumerate(exprs))])
        group = ", ".join(["t", *(f"k{i}" for i in range(len(exprs)))])
        rows = conn.execute(
            f"SELECT t, {', '.join(f'k{i}' for i in range(len(exprs)))}, "
            f"group_concat(DISTINCT src_tenant) FROM (SELECT {select}, tenant_id AS src_tenant "
            f'FROM "{table}") GROUP BY {group} HAVING count(*) > 1 LIMIT 6'
        ).fetchall()
        for row in rows:
            clashes.append(
                f"{table}: {'/'.join(map(str, row[1:-1]))} of tenants {row[-1]} -> {row[0]!r}"
            )
    if clashes:
        raise SourceError(
            f"{shown_as}: the tenant map puts records of different source tenants under the "
            "same target tenant and key",
            "Map those source tenants onto different target tenants (or keep one of them "
            "out with --tenant).",
            details=clashes[:10],
        )
