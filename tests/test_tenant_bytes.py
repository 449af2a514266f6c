"""A tenant id PostgreSQL cannot store (a NUL character, invalid UTF-8) is a bad record like
the same bytes in a key: listed by pre-flight (exit 2, nothing written), shown escaped by
`plan`, reported by `validate --backend sqlite`; never an internal error."""

from __future__ import annotations

import json
import sqlite3

import pytest

from pipelines import migrate
from sources.sample_db import SampleSpec
from tests.conftest import sample_file

BAD = {
    "nul": ("?", ("ten\x00ant",), "ten\\x00ant", "contains a NUL character"),
    "utf8": ("CAST(x'74656eff616e74' AS TEXT)", (), "ten\\udcffant", "is not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_bytes_in_a_tenant_id(tmp_path, target_db, capsys, monkeypatch, case):
    value, args, shown, problem = BAD[case]
    src = tmp_path / "src" / "llmspell.db"
    sample_file(src, SampleSpec(agents=6, workflows=3, sessions=4, kv=2, tenants=2, seed=9))
    conn = sqlite3.connect(src)
    (agent,) = conn.execute("SELECT agent_id FROM agent_states ORDER BY rowid LIMIT 1").fetchone()
    conn.execute(f"UPDATE agent_states SET tenant_id = {value} WHERE agent_id = ?", (*args, agent))
    conn.commit()
    conn.close()
    monkeypatch.chdir(tmp_path)
    plan_argv = ["plan", "--components", "agent_state,sessions", "--source", str(src)]
    assert migrate.run([*plan_argv, "--target", target_db.dsn, "-o", "p.toml"]) == 0
    out = capsys.readouterr().out
    assert "\x00" not in out and "\udcff" not in out
    assert shown in out
    for extra in (["--dry-run"], []):
        code = migrate.run(["execute", "--plan", "p.toml", *extra])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "internal error" not in err
        assert "cannot be stored in PostgreSQL" in err
        assert f"tenant_id {problem}" in err and agent in err
        assert "\x00" not in err
    assert migrate.run(["execute", "--plan", "p.toml", "--dry-run", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "internal error" not in err
    (detail,) = json.loads(out)["error"]["details"]
    assert f"tenant_id {problem}" in detail and shown in detail
    assert target_db.count("agent_states") == 0 and target_db.count("sessions") == 0
    code = migrate.run(
        ["validate", "--backend", "sqlite", "--components", "agent_state", "--source", str(src)]
    )
    out, err = capsys.readouterr()
    assert code == 1, err
    assert "internal error" not in err
    assert f"tenant_id {problem}" in out and "\x00" not in out
