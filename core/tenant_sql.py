"""The one place a tenant filter is written as SQL text.

SQLite and DuckDB take `?` placeholders; every reader of the source (snapshot reader,
backup, prints, validation's source side, memory checks) narrows to the run's tenants with
`tenant_in`, so the filter reads the same everywhere and is built in one place.
"""

from __future__ import annotations

from collections.abc import Sequence


def tenant_in(
    tenants: Sequence[str] | None, column: str = "tenant_id", keyword: str = "WHERE"
) -> tuple[str, list[str]]:
    """(` WHERE tenant_id IN (?, ?)`, [tenants]) for the given tenants; ("", []) for all.
    `keyword` joins it to what comes before (`WHERE`, `AND`); `column` names the column."""
    if not tenants:
        return "", []
    marks = ", ".join("?" * len(tenants))
    return f" {keyword} {column} IN ({marks})", list(tenants)
