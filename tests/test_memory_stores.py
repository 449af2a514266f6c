"""Phase 2 end to end: episodic, semantic and procedural memory from SQLite files laid out as
llmspell's SQLite backend lays them out, into PostgreSQL with pgvector, read back as
llmspell_app with the SQL llmspell's PostgreSQL backend runs (vector search, graph traversal,
time travel, pattern lookup)."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.errors import PreflightError
from core.model.memory_values import OPEN_END, decode_vector, pg_scope
from pipelines import api
from sources.memory_sample import MemorySpec, add_memory, f32_json, insert_vector, random_vector
from sources.sample_db import SampleSpec
from tests.helpers import make_plan, sample_file

MEMORY = "episodic_memory,semantic_memory,procedural_memory"
TENANTS = ("default", "tenant-acme")


def _memory_db(path: Path, spec: MemorySpec | None = None) -> Path:
    sample_file(path, SampleSpec(agents=4, workflows=2, sessions=2, kv=2, tenants=2, seed=3))
    with sqlite3.connect(path) as conn:
        add_memory(conn, spec or MemorySpec())
    return path


@pytest.fixture
def memory_sqlite(tmp_path) -> Path:
    return _memory_db(tmp_path / "llmspell.db")


def _app(target_db, tenant: str) -> psycopg.Connection:
    conn = target_db.connect(app=True, autocommit=True)
    conn.execute("SELECT set_config('app.current_tenant_id', %s, false)", (tenant,))
    return conn


def _sqlite(path: Path, query: str, args=()) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
def migrated(tmp_path, memory_sqlite, target_db):
    """The memory stores migrated once as llmspell_app (shared by the read-back tests)."""
    result = api.execute(make_plan(tmp_path, memory_sqlite, target_db.app_dsn, MEMORY))
    assert result.status == "SUCCESS", result
    return memory_sqlite, target_db, result


def test_plan_counts_per_dimension_and_tenant(tmp_path, memory_sqlite, target_db):
    made = api.make_plan(
        MEMORY, output=tmp_path / "p.toml", source=memory_sqlite, target=target_db.dsn
    )
    counts = {c["name"]: c["estimated_count"] for c in made.plan["components"]}
    assert counts == {
        "episodic_memory_384": 12,
        "episodic_memory_768": 8,
        "episodic_memory_1536": 0,
        "episodic_memory_3072": 0,
        "semantic_memory_entities": 10,
        "semantic_memory_relationships": 12,
        "procedural_memory": counts["procedural_memory"],
    }
    assert counts["procedural_memory"] > 5
    assert made.per_tenant["episodic_memory_384"] == {"default": 6, "tenant-acme": 6}
    assert made.per_tenant["semantic_memory_relationships"] == {"default": 6, "tenant-acme": 6}
    assert any("HNSW index files" in w for w in made.warnings)
    assert "HNSW index files" in (tmp_path / "p.toml").read_text()  # said in the plan
    dry = api.dry_run(make_plan(tmp_path, memory_sqlite, target_db.app_dsn, MEMORY))
    assert dry.status == "DRY_RUN"
    with target_db.connect() as conn:
        for table in ("vector_embeddings_384", "entities", "procedural_patterns"):
            assert conn.execute(f"SELECT count(*) FROM llmspell.{table}").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM llmspell_migrate.runs").fetchone()[0] == 0
    assert not (tmp_path / "backups").exists()


def test_vectors_arrive_bit_exact_and_search_matches_brute_force(migrated):
    src, target_db, result = migrated
    assert result.validation.passed
    by_name = {c.component: c for c in result.validation.components}
    assert by_name["episodic_memory_384"].compared == 12
    assert by_name["episodic_memory_768"].mode == "full"
    rows = _sqlite(
        src,
        "SELECT m.id, m.tenant_id, m.scope, m.dimension, e.embedding FROM vector_metadata m "
        "JOIN vec_embeddings_384 e ON e.rowid = m.rowid AND m.dimension = 384 "
        "UNION ALL SELECT m.id, m.tenant_id, m.scope, m.dimension, e.embedding "
        "FROM vector_metadata m JOIN vec_embeddings_768 e ON e.rowid = m.rowid "
        "AND m.dimension = 768",
    )
    assert any(not blob.startswith(b"[") for *_, blob in rows)  # raw f32 blobs too
    for tenant in TENANTS:
        with _app(target_db, tenant) as conn:
            for vid, t, scope, dim, blob in rows:
                if t != tenant:
                    continue
                got = conn.execute(
                    f"SELECT scope, embedding::real[] FROM llmspell.vector_embeddings_{dim} "
                    "WHERE id = %s",
                    (vid,),
                ).fetchone()
                assert got is not None, vid
                assert got[0] == pg_scope(scope)
                want = decode_vector(blob)
                assert np.array_equal(np.array(got[1], dtype=np.float32), want)
                assert np.array(got[1], dtype=np.float32).tobytes() == want.tobytes()
            # llmspell's scoped search (PostgreSQLVectorStorage::search_scoped) finds the
            # stored vector first, under its display-form scope, like brute force on SQLite
            for vid, t, scope, dim, blob in rows:
                if t != tenant:
                    continue
                query = "[" + ",".join(map(repr, decode_vector(blob).tolist())) + "]"
                found = conn.execute(
                    "SELECT id, scope, embedding, metadata, embedding <=> %s::vector AS distance "
                    f"FROM llmspell.vector_embeddings_{dim} WHERE scope = %s "
                    "ORDER BY distance LIMIT %s",
                    (query, pg_scope(scope), 3),
                ).fetchall()
                assert str(found[0][0]) == vid
                same_scope = [r for r in rows if r[1] == tenant and r[2] == scope and r[3] == dim]
                brute = sorted(
                    same_scope,
                    key=lambda r: (
                        1
                        - float(np.dot(decode_vector(r[4]), decode_vector(blob)))
                        / float(
                            np.linalg.norm(decode_vector(r[4]))
                            * np.linalg.norm(decode_vector(blob))
                        )
                    ),
                )[:3]
                assert [str(r[0]) for r in found] == [r[0] for r in brute]


def test_graph_time_travel_and_traversal_equal_on_both_sides(migrated):
    src, target_db, _ = migrated
    times = [1_735_689_600 + d * 86_400 + 30 for d in (0, 3, 9, 12, 40, 400)]
    for tenant in TENANTS:
        with _app(target_db, tenant) as conn:
            ids = [
                r[0]
                for r in _sqlite(
                    src, "SELECT entity_id FROM entities WHERE tenant_id = ?", (tenant,)
                )
            ]
            assert ids
            for t_valid in times:
                for t_tx in times:
                    # PostgresGraphStorage::get_entity_at: half-open valid and transaction ranges
                    pg = conn.execute(
                        "SELECT entity_id::text FROM llmspell.entities "
                        "WHERE valid_time_start <= to_timestamp(%s) "
                        "AND valid_time_end > to_timestamp(%s) "
                        "AND transaction_time_start <= to_timestamp(%s) "
                        "AND transaction_time_end > to_timestamp(%s) ORDER BY 1",
                        (t_valid, t_valid, t_tx, t_tx),
                    ).fetchall()
                    lite = _sqlite(
                        src,
                        "SELECT entity_id FROM entities WHERE tenant_id = ? "
                        "AND valid_time_start <= ? AND valid_time_end > ? "
                        "AND transaction_time_start <= ? AND transaction_time_end > ? ORDER BY 1",
                        (tenant, t_valid, t_valid, t_tx, t_tx),
                    )
                    assert pg == lite
                    pg_rel = conn.execute(
                        "SELECT relationship_id::text, from_entity::text, to_entity::text "
                        "FROM llmspell.relationships WHERE valid_time_start <= to_timestamp(%s) "
                        "AND valid_time_end > to_timestamp(%s) "
                        "AND transaction_time_end > to_timestamp(%s) ORDER BY 1",
                        (t_valid, t_valid, t_tx),
                    ).fetchall()
                    lite_rel = _sqlite(
                        src,
                        "SELECT relationship_id, from_entity, to_entity FROM relationships "
                        "WHERE tenant_id = ? AND valid_time_start <= ? AND valid_time_end > ? "
                        "AND transaction_time_end > ? ORDER BY 1",
                        (tenant, t_valid, t_valid, t_tx),
                    )
                    assert pg_rel == lite_rel
            # the open end is PostgreSQL's 'infinity': current entities as llmspell asks for them
            current = conn.execute(
                "SELECT count(*) FROM llmspell.entities WHERE valid_time_end = 'infinity' "
                "AND transaction_time_end = 'infinity'"
            ).fetchone()[0]
            assert (
                current
                == _sqlite(
                    src,
                    "SELECT count(*) FROM entities WHERE tenant_id = ? AND valid_time_end = ? "
                    "AND transaction_time_end = ?",
                    (tenant, OPEN_END, OPEN_END),
                )[0][0]
            )
            assert current > 0
            # graph traversal one hop (get_related): current relationships and their targets
            for eid in ids:
                pg = conn.execute(
                    "SELECT e.entity_id::text FROM llmspell.relationships r "
                    "JOIN llmspell.entities e ON r.to_entity = e.entity_id "
                    "WHERE r.from_entity = %s::uuid AND r.transaction_time_end = 'infinity' "
                    "AND e.transaction_time_end = 'infinity' ORDER BY 1",
                    (eid,),
                ).fetchall()
                lite = _sqlite(
                    src,
                    "SELECT e.entity_id FROM relationships r JOIN entities e "
                    "ON r.to_entity = e.entity_id WHERE r.from_entity = ? AND r.tenant_id = ? "
                    "AND r.transaction_time_end = ? AND e.transaction_time_end = ? ORDER BY 1",
                    (eid, tenant, OPEN_END, OPEN_END),
                )
                assert pg == lite


def test_patterns_lookup_as_llmspell(migrated):
    src, target_db, result = migrated
    for tenant in TENANTS:
        with _app(target_db, tenant) as conn:
            # PostgresProceduralStorage::get_learned_patterns
            pg = conn.execute(
                "SELECT scope, key, value, frequency, "
                "(extract(epoch FROM first_seen) * 1000)::bigint, "
                "(extract(epoch FROM last_seen) * 1000)::bigint FROM llmspell.procedural_patterns "
                "WHERE tenant_id = %s AND frequency >= %s ORDER BY 1, 2, 3",
                (tenant, 2),
            ).fetchall()
            lite = _sqlite(
                src,
                "SELECT scope, key, value, frequency, first_seen * 1000, last_seen * 1000 "
                "FROM procedural_patterns WHERE tenant_id = ? AND frequency >= ? ORDER BY 1, 2, 3",
                (tenant, 2),
            )
            assert pg == lite and pg
    # a re-run finds every record already there, identical: nothing written
    again = api.execute(Path(result.backup_path) / "plan.toml")
    assert again.status == "SUCCESS" and sum(again.written.values()) == 0


def test_rollback_removes_only_this_runs_rows(migrated):
    src, target_db, result = migrated
    # the backup holds every vector exactly as llmspell stored it
    query = (
        "SELECT m.id, e.embedding FROM vector_metadata m JOIN vec_embeddings_384 e "
        "ON e.rowid = m.rowid AND m.dimension = 384"
    )
    blobs = dict(_sqlite(src, query))
    lines = (Path(result.backup_path) / "source" / "episodic_memory_384.jsonl").read_text()
    backed = {
        json.loads(ln)["row"]["id"]: base64.b64decode(json.loads(ln)["row"]["embedding"]["base64"])
        for ln in lines.splitlines()
    }
    assert backed == blobs
    with target_db.connect() as conn:
        assert (
            conn.execute("SELECT count(*) FROM llmspell.vector_embeddings_384").fetchone()[0] == 12
        )
    done = api.rollback(backup=result.backup_path)
    assert done.deleted["episodic_memory_384"] == 12
    assert done.deleted["semantic_memory_entities"] == 10
    with target_db.connect() as conn:
        for table in ("vector_embeddings_384", "vector_embeddings_768", "entities",
                      "relationships", "procedural_patterns"):  # fmt: skip
            assert conn.execute(f"SELECT count(*) FROM llmspell.{table}").fetchone()[0] == 0


def _bad(path: Path, sql_and_args: list[tuple[str, tuple]]) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    with conn:
        for sql, args in sql_and_args:
            conn.execute(sql, args)
    conn.close()
    return path


@pytest.mark.parametrize(
    "case",
    ["nan", "wrong_length", "wrong_table", "dangling", "inverted", "duplicate", "null_json"],
)
def test_bad_input_is_refused_by_id_nothing_written(tmp_path, target_db, case):
    src = _memory_db(tmp_path / "bad.db", MemorySpec(vectors={384: 2, 768: 1}, entities=4,
                                                     relationships=2, patterns=2))  # fmt: skip
    rng = np.random.default_rng(1)
    bad_id = "0f0e0d0c-0b0a-4908-8706-050403020100"
    conn = sqlite3.connect(src)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    with conn:
        if case == "nan":
            vec = random_vector(rng, 384)
            vec[5] = np.nan
            insert_vector(conn, 384, bad_id, "default", "__global__", vec.astype("<f4").tobytes())
        elif case == "wrong_length":
            insert_vector(
                conn, 384, bad_id, "default", "__global__", f32_json(random_vector(rng, 380))
            )
        elif case == "null_json":
            insert_vector(
                conn, 384, bad_id, "default", "__global__", b"[0.5,null" + b",0.1" * 382 + b"]"
            )
        elif case == "wrong_table":
            # metadata says 768, the vector sits in the 384 table under the same rowid
            rowid = insert_vector(conn, 384, bad_id, "default", "__global__",
                                  f32_json(random_vector(rng, 384)))  # fmt: skip
            conn.execute("UPDATE vector_metadata SET dimension = 768 WHERE rowid = ?", (rowid,))
        elif case == "dangling":
            conn.execute(
                "INSERT INTO relationships VALUES "
                "(?, 'default', ?, ?, 'knows', '{}', 1, ?, 1, ?, 1)",
                (bad_id, "11111111-1111-4111-8111-111111111111",
                 "22222222-2222-4222-8222-222222222222", OPEN_END, OPEN_END),
            )  # fmt: skip
        elif case == "inverted":
            conn.execute(
                "INSERT INTO entities VALUES "
                "(?, 'default', 'person', 'x', '{}', 500, 100, 1, ?, 1)",
                (bad_id, OPEN_END),
            )
        elif case == "duplicate":
            conn.execute(
                "INSERT INTO entities VALUES (?, 'default', 'person', 'x', '{}', 1, ?, 1, ?, 1)",
                (bad_id, OPEN_END, OPEN_END),
            )
            conn.execute(
                "INSERT INTO entities VALUES (?, 'default', 'person', 'y', '{}', 1, ?, 1, ?, 1)",
                (bad_id.upper(), OPEN_END, OPEN_END),
            )
    conn.close()
    check = api.validate_backend("sqlite", MEMORY, source=str(src))
    assert any(bad_id in p.lower() for c in check.components for p in c.problems)
    plan = make_plan(tmp_path, src, target_db.app_dsn, MEMORY)
    with pytest.raises(PreflightError) as err:
        api.execute(plan)
    details = "\n".join(err.value.details)
    assert bad_id in details.lower(), details
    with target_db.connect() as pg:
        for table in ("vector_embeddings_384", "vector_embeddings_768", "entities",
                      "relationships", "procedural_patterns"):  # fmt: skip
            assert pg.execute(f"SELECT count(*) FROM llmspell.{table}").fetchone()[0] == 0


def test_init_target_creates_the_memory_tables_as_upstream(target_db):
    with target_db.connect() as conn:
        cols = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, format_type(atttypid, atttypmod) "
                "FROM information_schema.columns c JOIN pg_attribute a "
                "ON a.attrelid = ('llmspell.' || c.table_name)::regclass "
                "AND a.attname = c.column_name WHERE table_schema = 'llmspell'"
            ).fetchall()
        )
        for dim in (384, 768, 1536, 3072):
            assert cols[f"vector_embeddings_{dim}.embedding"] == f"vector({dim})"
            assert cols[f"vector_embeddings_{dim}.id"] == "uuid"
        assert cols["entities.valid_time_end"] == "timestamp with time zone"
        assert cols["procedural_patterns.scope"] == "character varying(500)"
        indexes = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'llmspell'"
            )
        }
        for dim in (384, 768, 1536):
            assert "USING hnsw (embedding vector_cosine_ops)" in indexes[f"idx_vector_{dim}_hnsw"]
        assert "idx_vector_3072_hnsw" not in indexes  # pgvector's HNSW stops at 2000 dims
        assert "USING gist" in indexes["idx_entities_valid_time"]
        pkeys = dict(
            conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'p' AND connamespace = 'llmspell'::regnamespace"
            ).fetchall()
        )
        assert pkeys["llmspell.entities"] == "PRIMARY KEY (entity_id, transaction_time_start)"
        assert pkeys["llmspell.relationships"] == (
            "PRIMARY KEY (relationship_id, transaction_time_start)"
        )
        forced = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'llmspell'::regnamespace "
            "AND relkind = 'r' AND NOT relispartition "  # event_log's months: read via the parent
            "AND NOT (relrowsecurity AND relforcerowsecurity)"
        ).fetchall()
        assert forced == []
    # as llmspell_app, under RLS, another tenant's rows are invisible
    with target_db.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO llmspell.procedural_patterns (tenant_id, scope, key, value) "
            "VALUES ('other', 's', 'k', 'v')"
        )
    with _app(target_db, "default") as conn:
        assert conn.execute("SELECT count(*) FROM llmspell.procedural_patterns").fetchone()[0] == 0


def test_one_changed_float_is_found_by_verify(migrated):
    src, target_db, result = migrated
    plan = Path(result.backup_path) / "plan.toml"
    with target_db.connect(autocommit=True) as conn:
        vid, vec = conn.execute(
            "SELECT id, embedding::real[] FROM llmspell.vector_embeddings_768 ORDER BY id LIMIT 1"
        ).fetchone()
        vec[100] = float(np.nextafter(np.float32(vec[100]), np.float32(2)))  # one ulp
        conn.execute(
            "UPDATE llmspell.vector_embeddings_768 SET embedding = %s::real[]::vector "
            "WHERE id = %s",
            (vec, vid),
        )
    report = api.verify(plan, full=True)
    assert not report.passed
    bad = [m for c in report.components for m in c.mismatches]
    assert [m.column for m in bad] == ["embedding"] and bad[0].key == str(vid)


def test_sigkill_then_rerun_resumes_memory(tmp_path, target_db):
    from tests.test_faults import spawn, wait_for

    src = _memory_db(
        tmp_path / "kill.db",
        MemorySpec(vectors={384: 600, 768: 40}, entities=30, relationships=30, patterns=20),
    )
    plan = tmp_path / "plan.toml"
    api.make_plan(MEMORY, output=plan, source=src, target=target_db.app_dsn, batch_size=100)
    proc = spawn(plan, tmp_path)
    wait_for(proc, "Progress:", 1)
    proc.kill()  # SIGKILL: no chance to roll back
    proc.wait()
    result = api.execute(plan)
    assert result.status == "SUCCESS" and result.resumed_run
    assert api.verify(plan, full=True).passed
    assert target_db.count("vector_embeddings_384") == 600
    undo = api.rollback(backup=result.backup_path)
    assert undo.deleted["episodic_memory_384"] == 600
    assert target_db.count("vector_embeddings_384") == 0


def test_embedding_blob_forms():
    vec = np.array([0.1, -2.5, 1e-7, 3.4028235e38], dtype=np.float32)
    assert decode_vector(f32_json(vec)).tobytes() == vec.tobytes()
    assert decode_vector(vec.astype("<f4").tobytes()).tobytes() == vec.tobytes()
    raw = np.frombuffer(b"[\x00\x00\x00" + vec.astype("<f4").tobytes()[4:], "<f4")
    assert decode_vector(raw.tobytes()).tobytes() == raw.astype(np.float32).tobytes()  # "[" raw
    for bad in (b"[0.5,null]", b"[0.5,", b"[1e39]", b"\x00\x00\xc0\x7f"):  # ... NaN as raw f32
        with pytest.raises(ValueError):
            decode_vector(bad)
    assert pg_scope("__global__") == "global"
    assert pg_scope("tenant:acme") == "custom:tenant:acme"
    assert pg_scope("custom:notes") == "custom:notes"
    assert pg_scope("user:alice") == "user:alice"


def test_swapped_vectors_fail_the_nearest_neighbour_check(migrated):
    import xxhash

    src, target_db, result = migrated
    by_name = {c.component: c for c in result.validation.components}
    assert by_name["episodic_memory_384"].knn_queries == 2 * 3  # 3 queries per tenant
    assert by_name["episodic_memory_384"].knn_failed == 0
    with target_db.connect(autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id::text FROM llmspell.vector_embeddings_384 WHERE tenant_id = 'default'"
            )
        ]
        query = min(ids, key=lambda i: xxhash.xxh3_64_intdigest(i.encode()))  # a picked query
        other = next(i for i in ids if i != query)
        conn.execute(
            "UPDATE llmspell.vector_embeddings_384 v SET embedding = w.embedding "
            "FROM llmspell.vector_embeddings_384 w WHERE (v.id, w.id) IN ((%s, %s), (%s, %s))",
            (query, other, other, query),
        )
    report = api.verify(Path(result.backup_path) / "plan.toml", full=True)
    part = next(c for c in report.components if c.component == "episodic_memory_384")
    assert part.knn_failed >= 1
    assert any(m.key == query and "nearest" in m.column for m in part.mismatches)


def test_init_target_without_pgvector_rights_creates_the_rest_and_says_why(empty_db):
    owner = "llmspell_memory_owner_test"
    with empty_db.connect(autocommit=True) as conn:
        conn.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{owner}') "
            f"THEN CREATE ROLE {owner} LOGIN; END IF; END $$"
        )
        conn.execute(f'ALTER DATABASE "{empty_db.name}" OWNER TO {owner}')
    from destinations import target_schema
    from tests.conftest import with_params

    with psycopg.connect(with_params(empty_db.dsn, options=f"-c role={owner}")) as conn:
        report = target_schema.ensure_schema(conn, bookkeeping=False)
    assert any("CREATE EXTENSION vector" in w for w in report.warnings)
    assert "llmspell.entities" in report.created
    assert not any("vector_embeddings" in t for t in report.created)
    with empty_db.connect() as conn:
        assert conn.execute("SELECT to_regclass('llmspell.vector_embeddings_384')").fetchone() == (
            None,
        )
