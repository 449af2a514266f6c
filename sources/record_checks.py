"""Find source records PostgreSQL cannot store, before anything is written.

Each problem names the component, tenant, key and column, so the operator can fix the record
in llmspell. What PostgreSQL refuses: invalid JSON (NaN and Infinity included), the NUL
character (`\\u0000` in JSON text, or raw in any text), lone UTF-16 surrogates, invalid UTF-8,
ids that are not UUIDs, values longer than their VARCHAR, out-of-range integers and
timestamps, and NULL in a NOT NULL column (each kind's checks: `core.model.checks`).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.model.components import Component


def printable(text: str) -> str:
    """`text` as it can be shown on a terminal or in a log: unchanged when it is printable
    UTF-8, else escaped as Python does (`ten\\x00ant`, `ten\\udcffant` for a byte that is not
    UTF-8), so a NUL or an undecodable byte read from the source is never printed raw."""
    if text.isprintable():
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return repr(text)[1:-1]


@dataclass(frozen=True)
class BadRecord:
    component: str
    tenant_id: str
    key: str
    column: str
    problem: str

    def __str__(self) -> str:
        return (
            f"{self.component} {printable(self.tenant_id)} {self.key!r}: {self.column} "
            f"{self.problem}"
        )

    def to_dict(self) -> dict:
        return {
            "component": self.component,
            "tenant_id": self.tenant_id,
            "key": self.key,
            "column": self.column,
            "problem": self.problem,
        }


class RecordChecker:
    """Checks rows shaped (llmspell_key, *component columns), as the reader yields them."""

    def __init__(self, comp: Component):
        self.comp = comp
        self.tenant_index = 1 + comp.column_names.index("tenant_id")
        self._checks = [
            (i + 1, col.name, col.nullable, col.kind.value_check(col))
            for i, col in enumerate(comp.columns)
        ]
        self._null_problem = {
            col.name: col.kind.null_problem(col) for col in comp.columns if col.kind.null_problem
        }

    def check(self, row: tuple) -> list[BadRecord]:
        return self._check_columns(row, self._checks)

    def check_rows(self, rows: list[tuple], picked: list[bool] | None = None) -> list[BadRecord]:
        """Check a batch. Each column is first checked as a whole with C-speed operations;
        only a column that fails that is checked record by record, to name the records.
        Afterwards `number_texts` holds the ids of the JSON texts whose numbers JSONB may
        change for llmspell (see `json_numbers.scan`). With `picked` (one flag per row),
        `texts` then holds each column's canonical texts of the picked rows, from the same
        parse as the check (None for the rest; `texts` is None if a record is bad)."""
        self.number_texts: set[int] = set()
        self.texts: list[list[str | None]] | None = None
        if not rows:
            self.texts = [[] for _ in self.comp.columns] if picked is not None else None
            return []
        columns = list(zip(*rows))
        texts: list[list[str | None]] = []
        suspect = []
        for entry, col in zip(self._checks, self.comp.columns):
            values = columns[entry[0]]
            if picked is None:
                ok = _column_ok(col, values, self.number_texts)
            else:
                column_texts = col.checked_texts(values, self.number_texts, picked)
                ok = column_texts is not None
                texts.append(column_texts)
            if not ok:
                suspect.append(entry)
        if not suspect:
            self.texts = texts if picked is not None else None
            return []
        out: list[BadRecord] = []
        for row in rows:
            out.extend(self._check_columns(row, suspect))
        if not out and picked is not None:  # the fast check was unsure, every value passed
            for index, *_ in suspect:
                col = self.comp.columns[index - 1]
                values = columns[index]
                texts[index - 1] = [
                    col.source_text(v) if p else None for v, p in zip(values, picked)
                ]
            self.texts = texts
        return out

    def _check_columns(self, row: tuple, checks) -> list[BadRecord]:
        bad = []
        for index, name, nullable, check in checks:
            value = row[index]
            if value is None:
                problem = (
                    None
                    if nullable
                    else self._null_problem.get(
                        name, "is NULL, but the PostgreSQL column is NOT NULL"
                    )
                )
            else:
                problem = check(value)
            if problem:
                bad.append(
                    BadRecord(
                        self.comp.name, str(row[self.tenant_index]), str(row[0]), name, problem
                    )
                )
        return bad


def _column_ok(col, values: tuple, number_texts: set[int] | None = None) -> bool:
    """True when every value of the column is certainly storable (the fast path); JSON texts
    with numbers worth a closer look are added to `number_texts` (by id)."""
    if None in values:
        if not col.nullable:
            return False
        values = tuple(v for v in values if v is not None)
        if not values:
            return True
    return col.kind.batch_check(col, values, number_texts)
