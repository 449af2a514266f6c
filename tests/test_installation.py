"""A real installation: the tool finds llmspell's files as llmspell does, and moves every file
of it (main database, RAG vectors) in one all-or-nothing run."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from core.errors import PlanError, SourceError
from pipelines import api, migrate
from pipelines.face.report import render_plan
from pipelines.shared import plan as plan_mod
from sources import installation
from sources.memory_sample import f32_json, insert_vector, random_vector
from sources.sample_db import SampleSpec
from sources.sqlite_reader import SourceDB
from sources.sqlite_schema import create_schema
from tests.conftest import sample_file

# -- discovery, without a server ----------------------------------------------------------


def _touch_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        create_schema(conn)
    conn.close()
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def test_default_database_without_a_config(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    main = _touch_db(home / ".llmspell" / "data" / "llmspell.db")
    inst = installation.discover(cwd=cwd, env=_env(home))
    assert inst.paths == [main] and inst.config is None
    assert "~/.llmspell" in inst.files[0].why


def test_guide_path_is_the_last_resort(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    guide = _touch_db(home / ".local" / "share" / "llmspell" / "llmspell.db")
    assert installation.discover(cwd=cwd, env=_env(home)).paths == [guide]


def test_nothing_found_lists_every_place_looked_at(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    with pytest.raises(SourceError) as err:
        installation.discover(cwd=cwd, env=_env(home, XDG_CONFIG_HOME=str(tmp_path / "xdg")))
    msg = err.value.message
    for place in [
        cwd / "llmspell.toml",
        cwd / ".llmspell.toml",
        cwd / "config" / "llmspell.toml",
        cwd / ".config" / "llmspell.toml",
        home / ".llmspell.toml",
        home / ".config" / "llmspell.toml",
        tmp_path / "xdg" / "llmspell" / "config.toml",
        home / ".llmspell" / "data" / "llmspell.db",
        home / ".local" / "share" / "llmspell" / "llmspell.db",
    ]:
        assert str(place) in msg, place
    assert "--source" in err.value.hint


def test_config_discovery_order_working_folder_first(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "work"
    a = _touch_db(tmp_path / "a.db")
    b = _touch_db(tmp_path / "b.db")
    (home / ".config").mkdir(parents=True)
    (home / ".config" / "llmspell.toml").write_text(f'[storage]\ndatabase_path = "{b}"\n')
    (cwd / "config").mkdir(parents=True)
    (cwd / "config" / "llmspell.toml").write_text(f'[storage]\ndatabase_path = "{a}"\n')
    found = installation.discover(cwd=cwd, env=_env(home))
    assert found.paths == [a] and found.config == cwd / "config" / "llmspell.toml"
    (cwd / "config" / "llmspell.toml").unlink()
    assert installation.discover(cwd=cwd, env=_env(home)).paths == [b]


def test_storage_settings_resolved_as_llmspell_resolves_them(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    cfg = cwd / "llmspell.toml"
    # base_dir with ~: <home>/state/data/llmspell.db
    cfg.write_text('[storage]\nbase_dir = "~/state"\n')
    main = _touch_db(home / "state" / "data" / "llmspell.db")
    assert installation.discover(cwd=cwd, env=_env(home)).paths == [main]
    # relative database_path: relative to the working folder
    rel = _touch_db(cwd / "db" / "x.db")
    cfg.write_text('[storage]\nbase_dir = "~/state"\ndatabase_path = "db/x.db"\n')
    assert installation.discover(cwd=cwd, env=_env(home)).paths == [rel]
    # the env override wins over the file's database_path; storage.sqlite over both
    env_db = _touch_db(tmp_path / "env.db")
    env = _env(home, LLMSPELL_STORAGE_DATABASE_PATH=str(env_db))
    assert installation.discover(cwd=cwd, env=env).paths == [env_db]
    sq = _touch_db(home / "sq.db")
    cfg.write_text(
        '[storage]\ndatabase_path = "db/x.db"\n[storage.sqlite]\ndatabase_path = "~/sq.db"\n'
    )
    found = installation.discover(cwd=cwd, env=env)
    assert found.paths == [sq] and "storage.sqlite.database_path" in found.files[0].why
    # LLMSPELL_STORAGE_BASE_DIR over storage.base_dir
    cfg.write_text('[storage]\nbase_dir = "~/state"\n')
    other = _touch_db(tmp_path / "base" / "data" / "llmspell.db")
    env = _env(home, LLMSPELL_STORAGE_BASE_DIR=str(tmp_path / "base"))
    assert installation.discover(cwd=cwd, env=env).paths == [other]


def test_rag_persistence_path_folder_or_file(tmp_path):
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    main = _touch_db(home / ".llmspell" / "data" / "llmspell.db")
    cfg = home / ".llmspell.toml"
    cfg.write_text('[rag.vector_storage]\npersistence_path = "./rag"\n')  # no extension: a folder
    vectors = _touch_db(cwd / "rag" / "vectors.db")
    inst = installation.discover(cwd=cwd, env=_env(home))
    assert inst.paths == [main, vectors]
    assert [f.role for f in inst.files] == ["main", "rag_vectors"]
    assert "rag.vector_storage.persistence_path" in inst.files[1].why
    cfg.write_text(f'[rag.vector_storage]\npersistence_path = "{tmp_path}/v.sqlite"\n')
    named = tmp_path / "v.sqlite"
    inst = installation.discover(cwd=cwd, env=_env(home))
    assert inst.paths == [main] and inst.missing[0].path == named  # named, not on disk yet
    _touch_db(named)
    assert installation.discover(cwd=cwd, env=_env(home)).paths == [main, named]


def test_bad_config_is_named(tmp_path):
    cfg = tmp_path / "llmspell.toml"
    cfg.write_text("[storage\n")
    with pytest.raises(SourceError, match="not a valid llmspell config"):
        installation.discover(cfg, cwd=tmp_path, env={"HOME": str(tmp_path)})
    cfg.write_text("[storage]\ndatabase_path = 3\n")
    with pytest.raises(SourceError, match="storage.database_path must be a path"):
        installation.discover(cfg, cwd=tmp_path, env={"HOME": str(tmp_path)})


def test_plan_with_several_files_round_trips(tmp_path):
    data = {
        "version": "1.0",
        "source": {"path": "/a.db", "files": [{"path": "/a.db"}, {"path": "/b.db"}]},
        "components": [{"name": "agent_state", "estimated_count": 1, "batch_size": 100}],
    }
    plan = plan_mod.from_dict(data)
    assert plan.source_paths == ["/a.db", "/b.db"]
    assert plan_mod.from_dict(plan.to_dict()).source_paths == ["/a.db", "/b.db"]
    single = plan_mod.from_dict({**data, "source": {"path": "/a.db"}})
    assert single.fingerprint() != plan.fingerprint()  # a resumed run reads the same files
    bad = {**data, "source": {"path": "/b.db", "files": [{"path": "/a.db"}]}}
    with pytest.raises(PlanError, match="not the first of source.files"):
        plan_mod.from_dict(bad)


# -- a whole installation in one run, against a real PostgreSQL ----------------------------

RAG_IDS = [str(uuid.UUID(int=i + 1, version=4)) for i in range(6)]


def _rag_file(path: Path, ids=RAG_IDS, dim: int = 384) -> Path:
    """A RAG vectors database as llmspell's SQLite vector backend writes it."""
    import numpy as np

    _touch_db(path)
    rng = np.random.default_rng(5)
    with sqlite3.connect(path) as conn:
        for i, vid in enumerate(ids):
            tenant = ("default", "tenant-acme")[i % 2]
            blob = f32_json(random_vector(rng, dim))
            insert_vector(conn, dim, vid, tenant, "__global__", blob, f'{{"doc": {i}}}')
    conn.close()
    return path


@pytest.fixture
def home_install(tmp_path, monkeypatch):
    """HOME laid out as llmspell lays it out: ~/.llmspell.toml naming a RAG folder, the main
    database at the default place, the RAG vectors in <persistence_path>/vectors.db."""
    home = tmp_path / "home"
    main = home / ".llmspell" / "data" / "llmspell.db"
    sample_file(main, SampleSpec(agents=20, workflows=6, sessions=8, kv=10, tenants=2, seed=4))
    rag = _rag_file(home / ".llmspell" / "rag" / "vectors.db")
    (home / ".llmspell.toml").write_text(
        f'[rag.vector_storage]\npersistence_path = "{home}/.llmspell/rag"\n'
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home, main, rag


def _plan_all(tmp_path: Path, dsn: str, **kw) -> tuple[Path, object]:
    out = tmp_path / "plan.yaml"
    made = api.make_plan("all", output=out, target=dsn, **kw)
    return out, made


def _pg(target_db, query: str) -> list[tuple]:
    with target_db.connect() as conn:
        return conn.execute(query).fetchall()


def test_installation_planned_by_discovery_and_by_config(tmp_path, home_install, target_db):
    home, main, rag = home_install
    out, made = _plan_all(tmp_path, target_db.dsn)
    files = made.plan["source"]["files"]
    assert [f["path"] for f in files] == [str(main), str(rag)]
    assert files[1]["role"] == "rag_vectors"
    assert "persistence_path" in files[1]["found_by"]
    assert files[1]["records"] == {"episodic_memory_384": len(RAG_IDS)}
    assert "episodic_memory_384" not in files[0]["records"]
    assert made.plan["source"]["config"] == str(home / ".llmspell.toml")
    shown = "\n".join(render_plan(made, str(out)))  # what `plan` prints
    assert "Source files: 2" in shown
    assert f"- {rag} (episodic_memory_{384}: {len(RAG_IDS)})" in shown
    assert "found by: rag.vector_storage.persistence_path" in shown
    # --config names the same file: the same files
    _, by_config = _plan_all(tmp_path, target_db.dsn, config=home / ".llmspell.toml", force=True)
    assert [f["path"] for f in by_config.plan["source"]["files"]] == [str(main), str(rag)]
    # --source with only the main file: the plan says which file it leaves out
    _, partial = _plan_all(tmp_path, target_db.dsn, source=main, force=True)
    assert any(str(rag) in w and "not in this plan" in w for w in partial.warnings)


def test_installation_executed_verified_synced_and_rolled_back(tmp_path, home_install, target_db):
    home, main, rag = home_install
    out, _ = _plan_all(tmp_path, target_db.dsn)
    result = api.execute(out)
    assert result.status == "SUCCESS", result
    vectors = _pg(target_db, "SELECT id::text FROM llmspell.vector_embeddings_384")
    assert sorted(v[0] for v in vectors) == sorted(RAG_IDS)
    assert _pg(target_db, "SELECT count(*) FROM llmspell.agent_states")[0][0] == 20
    assert api.verify(out, full=True).passed
    # a change in each file, then one sync catches up both
    with sqlite3.connect(main) as conn:
        conn.execute(
            "UPDATE kv_store SET value = x'7b7d' WHERE rowid = (SELECT min(rowid) FROM kv_store)"
        )
    conn.close()
    extra = str(uuid.UUID(int=99, version=4))
    import numpy as np

    with sqlite3.connect(rag) as conn:
        blob = f32_json(random_vector(np.random.default_rng(9), 384))
        insert_vector(conn, 384, extra, "default", "__global__", blob)
    conn.close()
    synced = api.sync(out)
    assert synced.status == "SUCCESS", synced
    assert synced.changes["episodic_memory_384"]["inserted"] == 1
    assert synced.changes["kv_store"]["updated"] == 1
    query = f"SELECT count(*) FROM llmspell.vector_embeddings_384 WHERE id = '{extra}'"
    assert _pg(target_db, query)[0][0] == 1
    # rollback of the execute: every file's rows go (the sync's first: newest first)
    api.rollback(backup=synced.backup_path)
    api.rollback(backup=result.backup_path)
    assert _pg(target_db, "SELECT count(*) FROM llmspell.vector_embeddings_384")[0][0] == 0
    assert _pg(target_db, "SELECT count(*) FROM llmspell.agent_states")[0][0] == 0


def test_failure_in_the_second_file_rolls_back_the_first(tmp_path, home_install, target_db):
    home, main, rag = home_install
    out, _ = _plan_all(tmp_path, target_db.dsn)
    before = target_db.snapshot()
    with target_db.connect(autocommit=True) as conn:  # a target refusing one RAG vector
        conn.execute(f"""
            CREATE FUNCTION llmspell.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.id = '{RAG_IDS[-1]}' THEN RAISE EXCEPTION 'refused by test'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_refuse BEFORE INSERT ON llmspell.vector_embeddings_384
                FOR EACH ROW EXECUTE FUNCTION llmspell.test_refuse();""")
    code = migrate.run(["execute", "--plan", str(out)])
    assert code == 1
    assert target_db.snapshot() == before  # the main file's agents, sessions, kv: gone again
    assert _pg(target_db, "SELECT count(*) FROM llmspell.vector_embeddings_384")[0][0] == 0
    assert _pg(target_db, "SELECT count(*) FROM llmspell_migrate.written_keys")[0][0] == 0


def test_colliding_keys_in_two_files_are_refused_naming_both(tmp_path, target_db):
    a = _rag_file(tmp_path / "a.db", RAG_IDS[:4])
    b = _rag_file(tmp_path / "b.db", RAG_IDS[2:])
    with pytest.raises(SourceError) as err:
        SourceDB([a, b])
    assert str(a) in err.value.message and str(b) in err.value.message
    assert RAG_IDS[2] in err.value.message and RAG_IDS[3] in err.value.message
    args = ["--source", str(a), "--source", str(b), "--target", target_db.dsn]
    code = migrate.run(["plan", "--components", "all", *args, "--output", str(tmp_path / "p.yaml")])
    assert code == 2


def test_disjoint_files_merge_with_their_vectors(tmp_path):
    a = _rag_file(tmp_path / "a.db", RAG_IDS[:3])
    b = _rag_file(tmp_path / "b.db", RAG_IDS[3:])
    with SourceDB([a, b]) as db:
        rows = db.conn.execute(
            "SELECT m.id, e.embedding FROM vector_metadata m JOIN vec_embeddings_384 e "
            "ON e.rowid = m.rowid ORDER BY m.id"
        ).fetchall()
        assert [r[0] for r in rows] == sorted(RAG_IDS)
        assert db.origins["vector_metadata"] == [a, b]
    for path, ids in ((a, RAG_IDS[:3]), (b, RAG_IDS[3:])):  # each vector with its own embedding
        with SourceDB(path) as one:
            mine = dict(one.conn.execute(
                "SELECT m.id, e.embedding FROM vector_metadata m JOIN vec_embeddings_384 e "
                "ON e.rowid = m.rowid").fetchall())  # fmt: skip
        assert {i: mine[i] for i in ids} == {r[0]: r[1] for r in rows if r[0] in ids}
