"""Fuzzing with random mutations of a valid plan and of a valid llmspell database (seeded, so
a failure replays). Whatever the mutation: never a traceback or an internal error, an exit
code in {0, 1, 2, 3}, the source's bytes unchanged, and the target either fully migrated and
validated or exactly as it was before."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from sources.sample_db import SampleSpec
from tests.helpers import file_hashes, make_plan, run_cli, sample_file

SEED = 20261125
SPEC = SampleSpec(agents=40, workflows=12, sessions=12, kv=12, tenants=2, seed=3)
TABLES = ("agent_states", "workflow_states", "sessions", "kv_store")
ODD_VALUES = [
    None, True, -1, 0, 99, 10**12, 1.5, float("inf"), "", "x" * 300, "agent_state",
    "../../etc", [], ["agent_state", "agent_state"], {}, {"name": "kv_store"}, "\x00", "é",
]  # fmt: skip


def _cli(capsys, *argv: str) -> tuple[int, str]:
    """The CLI on fuzzed input: any exit code it documents, never an internal error."""
    code, out, err = run_cli(capsys, *argv)
    text = out + err
    assert "internal error" not in text, text
    assert code in (0, 1, 2, 3), (code, text)
    return code, text


def _reset(target_db) -> None:
    with target_db.connect(autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(f"llmspell.{t}" for t in TABLES) + " CASCADE")
        conn.execute("TRUNCATE llmspell_migrate.runs CASCADE")


def _check_outcome(capsys, code: int, plan: Path, target_db, before) -> None:
    """Exit 0: everything there and validated. Anything else: the target as it was."""
    if code == 0:
        assert _cli(capsys, "verify", "--plan", str(plan), "--full")[0] == 0
    else:
        assert target_db.snapshot() == before


# -- plan mutations ------------------------------------------------------------------------------
def _mutate_plan(rng: random.Random, doc: dict, text: str) -> str:
    kind = rng.choice(["value", "drop", "text-cut", "text-noise", "dup-line", "section"])
    if kind == "text-cut":
        return text[: rng.randrange(len(text))]
    if kind == "text-noise":
        at = rng.randrange(len(text))
        return text[:at] + rng.choice([":", "- ", "\t", "{", "'", "\n  x: 1\n", "\x00"]) + text[at:]
    if kind == "dup-line":
        lines = text.splitlines(keepends=True)
        at = rng.randrange(len(lines))
        lines.insert(at, lines[at])
        return "".join(lines)
    doc = yaml.safe_load(text)
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((*path, k))
                walk(v, (*path, k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((*path, i))
                walk(v, (*path, i))

    walk(doc, ())
    path = rng.choice(paths)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if kind == "drop":
        del parent[path[-1]]
    elif kind == "section":
        doc[rng.choice(["extra", "source", "target", "rollback"])] = rng.choice(ODD_VALUES)
    else:
        parent[path[-1]] = rng.choice(ODD_VALUES)
    return yaml.safe_dump(doc, allow_unicode=True)


def test_fuzz_plans(tmp_path, target_db, capsys):
    src = tmp_path / "llmspell.db"
    sample_file(src, SPEC)
    hashes = file_hashes(src)
    plan = tmp_path / "plan.toml"
    make_plan(plan.parent, src, target_db.dsn, name=plan.name)
    good = plan.read_text()
    rng = random.Random(SEED)
    executed = 0
    codes = set()
    for _ in range(60):
        bad = tmp_path / "mutated.toml"
        try:
            bad.write_text(_mutate_plan(rng, yaml.safe_load(good), good), encoding="utf-8")
        except (UnicodeEncodeError, ValueError):
            continue
        before = target_db.snapshot()
        code, _ = _cli(capsys, "execute", "--plan", str(bad), "--dry-run")
        codes.add(code)
        assert target_db.snapshot() == before  # a dry-run writes nothing, whatever the plan
        if code == 0 and executed < 4:
            executed += 1
            code, _ = _cli(capsys, "execute", "--plan", str(bad))
            _check_outcome(capsys, code, bad, target_db, before)
            _reset(target_db)
    assert file_hashes(src) == hashes
    assert {0, 2} <= codes and executed  # the mutations reached both outcomes


# -- source mutations ----------------------------------------------------------------------------
def _mutate_source(rng: random.Random, path: Path) -> str:
    kind = rng.choice(["bytes", "bytes", "cell", "cell", "cell", "schema"])
    if kind == "bytes":
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 40)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        return kind
    conn = sqlite3.connect(path)
    try:
        _mutate_rows(rng, conn, kind)
        conn.commit()
    except (sqlite3.DatabaseError, UnicodeDecodeError):  # corrupted earlier, or a constraint
        pass
    finally:
        conn.close()
    return kind


def _mutate_rows(rng: random.Random, conn: sqlite3.Connection, kind: str) -> None:
    table = rng.choice(TABLES)
    if kind == "schema":
        stmt = rng.choice([
            f"DROP TABLE {table}",
            f"ALTER TABLE {table} RENAME TO {table}_old",
            f"ALTER TABLE {table} ADD COLUMN surprise TEXT DEFAULT 'x'",
            f"DELETE FROM {table}",
        ])  # fmt: skip
        conn.execute(stmt)
        return
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    col = rng.choice(cols)
    value = rng.choice([
        None, "", "{", "not json", '{"n": 1e400}', "\x00", 2**63 - 1, -5, 1.25,
        b"\xff\xfe", "x" * 5000, "00000000-0000-0000-0000-000000000000", "[1, 2]",
    ])  # fmt: skip
    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    rowid = conn.execute(
        f"SELECT rowid FROM {table} ORDER BY rowid LIMIT 1 OFFSET ?", (rng.randrange(count or 1),)
    ).fetchone()
    if rowid:
        conn.execute(f"UPDATE {table} SET {col} = ? WHERE rowid = ?", (value, rowid[0]))


def test_fuzz_sources(tmp_path, target_db, capsys):
    base = tmp_path / "base.db"
    sample_file(base, SPEC)
    with sqlite3.connect(base) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    rng = random.Random(SEED)
    codes = set()
    for i in range(14):
        case = tmp_path / f"case{i}"
        case.mkdir()
        src = case / "llmspell.db"
        shutil.copyfile(base, src)
        plan = case / "plan.toml"
        make_plan(plan.parent, src, target_db.dsn, name=plan.name)
        _mutate_source(rng, src)
        hashes = file_hashes(src)
        before = target_db.snapshot()
        code, text = _cli(capsys, "execute", "--plan", str(plan))
        codes.add(code)
        assert file_hashes(src) == hashes
        _check_outcome(capsys, code, plan, target_db, before)
        _reset(target_db)
    assert {0, 2} <= codes  # some mutations are harmless, some refused


@pytest.mark.parametrize("seed", range(3))
def test_mutators_change_something(tmp_path, seed):
    """The fuzzers above test something only if their mutations change the inputs."""
    src = tmp_path / "x.db"
    sample_file(src, SPEC)
    before = src.read_bytes()
    changed = 0
    for i in range(6):
        _mutate_source(random.Random(seed * 100 + i), src)
        changed += src.read_bytes() != before
        before = src.read_bytes()
    assert changed >= 3
    text = "version: '1.0'\ncomponents:\n- name: agent_state\n  estimated_count: 1\n"
    rng = random.Random(seed)
    assert sum(_mutate_plan(rng, yaml.safe_load(text), text) != text for _ in range(10)) >= 8
