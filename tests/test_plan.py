"""The plan file: what `plan` writes (the guide's YAML shape, true counts, no password) and how
strictly a plan is checked when read (one-line error naming the key, a fix line, exit 2)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from core import settings
from core.errors import PlanError
from core.model import registry
from pipelines import migrate
from pipelines.shared.plan import BATCH_MAX, BATCH_MIN, default_batch_size, from_dict, load
from sources.sample_db import SampleSpec
from tests.helpers import only_error, sample_file

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/x"
SECRET = "S3cretPw"
SECRET_DSN = f"postgresql://u:{SECRET}@127.0.0.1:1/x"

ONLY = f"Only {', '.join(registry.SUPPORTED)} are supported."


@pytest.fixture
def small_db(tmp_path) -> tuple[Path, dict[str, int]]:
    path = tmp_path / "src" / "llmspell.db"
    counts = sample_file(
        path, SampleSpec(agents=7, workflows=4, sessions=5, kv=3, tenants=2, seed=3)
    )
    return path, counts


def _good_plan() -> dict:
    return {
        "version": "1.0",
        "created_at": "2025-01-15T10:30:00Z",
        "source": {"backend": "sqlite", "path": "/data/llmspell.db"},
        "target": {"backend": "postgres", "connection": "postgresql://u@db:5432/llmspell"},
        "components": [
            {"name": "agent_state", "estimated_count": 42, "batch_size": 1000},
            {"name": "workflow_state", "estimated_count": 15, "batch_size": 1000},
        ],
        "validation": {"checksum_sample_percent": 10, "full_comparison_threshold": 100},
        "rollback": {"backup_enabled": True},
    }


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_the_guide_example_plan_loads():
    plan = from_dict(_good_plan())
    assert plan.component_names == ["agent_state", "workflow_state"]
    assert [c.batch_size for c in plan.components] == [1000, 1000]
    assert [c.estimated_count for c in plan.components] == [42, 15]
    assert plan.source_path == "/data/llmspell.db"
    assert plan.target_connection == "postgresql://u@db:5432/llmspell"
    assert plan.checksum_sample_percent == 10 and plan.full_comparison_threshold == 100
    assert plan.backup_enabled is True


def _set(path: tuple, value):
    def mutate(data):
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _delete_section(name):
    def mutate(data):
        data.pop(name)

    return mutate


BAD_PLANS = {
    "unknown top-level key": (_set(("colour",), "blue"), "unknown key 'colour'"),
    "unknown key in section": (
        _set(("validation", "sample_pct"), 5),
        "unknown key 'validation.sample_pct'",
    ),
    "unknown key in rollback": (_set(("rollback", "keep"), 3), "unknown key 'rollback.keep'"),
    "unknown key in component": (
        _set(("components", 1, "batchsize"), 500),
        "unknown key 'components[1].batchsize'",
    ),
    "batch_size as string": (
        _set(("components", 0, "batch_size"), "1000"),
        "'components[0].batch_size' must be an integer",
    ),
    "batch_size as float": (
        _set(("components", 0, "batch_size"), 1000.5),
        "'components[0].batch_size' must be an integer",
    ),
    "batch_size as bool": (
        _set(("components", 0, "batch_size"), True),
        "'components[0].batch_size' must be an integer",
    ),
    "estimated_count as string": (
        _set(("components", 0, "estimated_count"), "many"),
        "'components[0].estimated_count' must be an integer",
    ),
    "negative estimated_count": (
        _set(("components", 0, "estimated_count"), -1),
        "'components[0].estimated_count' is -1",
    ),
    "batch_size below 100": (
        _set(("components", 0, "batch_size"), 99),
        "'components[0].batch_size' is 99, outside 100-100000",
    ),
    "batch_size above 100000": (
        _set(("components", 1, "batch_size"), 100_001),
        "'components[1].batch_size' is 100001, outside 100-100000",
    ),
    "checksum percent below 0": (
        _set(("validation", "checksum_sample_percent"), -1),
        "'validation.checksum_sample_percent'",
    ),
    "checksum percent above 100": (
        _set(("validation", "checksum_sample_percent"), 100.5),
        "'validation.checksum_sample_percent'",
    ),
    "checksum percent as string": (
        _set(("validation", "checksum_sample_percent"), "ten"),
        "'validation.checksum_sample_percent'",
    ),
    "checksum percent as bool": (
        _set(("validation", "checksum_sample_percent"), True),
        "'validation.checksum_sample_percent'",
    ),
    "checksum percent NaN": (
        _set(("validation", "checksum_sample_percent"), float("nan")),
        "'validation.checksum_sample_percent'",
    ),
    "negative full comparison threshold": (
        _set(("validation", "full_comparison_threshold"), -1),
        "'validation.full_comparison_threshold' is -1",
    ),
    "fractional full comparison threshold": (
        _set(("validation", "full_comparison_threshold"), 1.5),
        "'validation.full_comparison_threshold' must be an integer",
    ),
    "backup_enabled not a bool": (
        _set(("rollback", "backup_enabled"), "sure"),
        "'rollback.backup_enabled' must be true or false",
    ),
    "backup_path not a string": (
        _set(("rollback", "backup_path"), 7),
        "'rollback.backup_path' must be a string",
    ),
    "section not a mapping": (_set(("source",), "sqlite"), "'source' must be a mapping"),
    "source.path not a string": (_set(("source", "path"), 5), "'path' must be a string"),
    "tenants not a list": (
        _set(("source", "tenants"), "tenant-acme"),
        "'source.tenants' must be a list",
    ),
    "components missing": (_delete_section("components"), "'components' must be a non-empty list"),
    "components empty": (_set(("components",), []), "'components' must be a non-empty list"),
    "components a string": (
        _set(("components",), "agent_state"),
        "'components' must be a non-empty list",
    ),
    "component a string": (
        _set(("components", 0), "agent_state"),
        "'components[0]' must be a mapping",
    ),
    "unknown component": (
        _set(("components", 0, "name"), "agnet_state"),
        f"'components[0].name': {ONLY} Got: agnet_state",
    ),
    "unknown component in a later slot": (
        _set(("components", 1, "name"), "bogus_store"),
        f"{ONLY} Got: bogus_store",
    ),
    "component listed twice": (
        _set(("components", 1, "name"), "agent_state"),
        "component 'agent_state' is listed twice",
    ),
    "unsupported source backend": (
        _set(("source", "backend"), "redis"),
        "Phase 1: Only 'sqlite' is supported as source backend",
    ),
    "unsupported target backend": (
        _set(("target", "backend"), "mysql"),
        "Only 'postgres' is supported as target backend",
    ),
    "unsupported version": (_set(("version",), "2.0"), "unsupported plan version '2.0'"),
}


@pytest.mark.parametrize("case", list(BAD_PLANS), ids=list(BAD_PLANS))
def test_bad_plan_is_refused_with_one_line_naming_the_key(tmp_path, case, capsys):
    mutate, needle = BAD_PLANS[case]
    data = copy.deepcopy(_good_plan())
    mutate(data)
    path = _write(tmp_path / "plan.toml", data)

    with pytest.raises(PlanError) as info:
        load(path)
    exc = info.value
    assert needle in exc.message
    assert "\n" not in exc.message and exc.hint and "\n" not in exc.hint
    assert exc.exit_code == 2

    rc = migrate.run(["execute", "--plan", str(path), "--dry-run", "--target", UNREACHABLE])
    assert rc == 2
    out = capsys.readouterr()
    only_error(out.err, needle, str(path))
    assert "DRY-RUN" not in out.out  # refused before any pre-flight work


def test_later_phase_component_message_is_the_guides(tmp_path, capsys):
    data = _good_plan()
    data["components"] = [{"name": "bogus_store", "estimated_count": 1, "batch_size": 1000}]
    path = _write(tmp_path / "plan.toml", data)
    assert migrate.run(["execute", "--plan", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    only_error(err, f"{ONLY} Got: bogus_store")
    assert "spelling" in err  # no store is left for a later phase: the fix line says so


@pytest.mark.parametrize(
    "path,value",
    [
        (("components", 0, "batch_size"), BATCH_MIN),
        (("components", 0, "batch_size"), BATCH_MAX),
        (("validation", "checksum_sample_percent"), 0),
        (("validation", "checksum_sample_percent"), 100),
        (("validation", "checksum_sample_percent"), 2.5),
        (("validation", "full_comparison_threshold"), 0),
        (("rollback", "backup_enabled"), False),
        (("source", "tenants"), ["tenant-acme", "tenant-globex"]),
    ],
    ids=lambda v: str(v),
)
def test_boundary_values_are_accepted(tmp_path, path, value):
    data = _good_plan()
    _set(path, value)(data)
    plan = load(_write(tmp_path / "plan.toml", data))
    got = {
        "batch_size": plan.components[0].batch_size,
        "checksum_sample_percent": plan.checksum_sample_percent,
        "full_comparison_threshold": plan.full_comparison_threshold,
        "backup_enabled": plan.backup_enabled,
        "tenants": plan.tenants,
    }[path[-1]]
    assert got == value


def test_sections_may_be_omitted_and_take_the_guides_defaults(tmp_path):
    path = tmp_path / "plan.toml"
    path.write_text("components:\n  - name: sessions\n")
    plan = load(path)
    assert plan.component_names == ["sessions"]
    assert plan.components[0].batch_size == 1000
    assert plan.checksum_sample_percent == 10
    assert plan.full_comparison_threshold == 100
    assert plan.backup_enabled is True
    assert plan.source_path is None and plan.target_connection is None


def test_plan_connection_with_password_is_refused_without_echoing_it(tmp_path, capsys):
    data = _good_plan()
    data["target"]["connection"] = SECRET_DSN
    path = _write(tmp_path / "plan.toml", data)
    with pytest.raises(PlanError, match="target.connection holds a password"):
        load(path)
    assert migrate.run(["execute", "--plan", str(path), "--dry-run"]) == 2
    out = capsys.readouterr()
    only_error(out.err, "target.connection holds a password")
    assert SECRET not in out.out + out.err


def test_missing_plan_file(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    with pytest.raises(PlanError, match="Plan file not found"):
        load(missing)
    assert migrate.run(["execute", "--plan", str(missing)]) == 2
    err = capsys.readouterr().err
    only_error(err, "Plan file not found", "nope.toml")
    assert f"{settings.cli_command()} plan" in err  # the fix line says how to make one


@pytest.mark.parametrize(
    "text,needle",
    [
        ("version: '1.0'\ncomponents: [\n  - name: agent_state\n", "not valid YAML"),
        ("version: '1.0'\n  source: : :\n", "not valid YAML"),
        ('version: "1.0"\nsource:\n\tbackend: sqlite\n', "not valid YAML"),
    ],
    ids=["unclosed-flow", "bad-indent", "tab-indent"],
)
def test_invalid_yaml(tmp_path, text, needle, capsys):
    path = tmp_path / "plan.toml"
    path.write_text(text)
    with pytest.raises(PlanError, match=needle) as info:
        load(path)
    assert re.search(r"\(line \d+\)", info.value.message)
    assert migrate.run(["execute", "--plan", str(path), "--dry-run"]) == 2
    only_error(capsys.readouterr().err, needle)


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"", "not a migration plan"),
        (b"- agent_state\n- sessions\n", "not a migration plan"),
        (b"just a sentence\n", "not a migration plan"),
        (b"\xff\xfe\x00binary\x00", "not a UTF-8 text file"),
        # a TOML plan (what the .toml name suggests) is not what plan files are
        (
            b'version = "1.0"\n\n[source]\nbackend = "sqlite"\n\n[[components]]\n'
            b'name = "agent_state"\n',
            "not a migration plan",
        ),
    ],
    ids=["empty", "list", "scalar", "binary", "toml"],
)
def test_files_that_are_not_plans(tmp_path, content, needle, capsys):
    path = tmp_path / "plan.toml"
    path.write_bytes(content)
    with pytest.raises(PlanError, match=needle):
        load(path)
    assert migrate.run(["execute", "--plan", str(path), "--dry-run"]) == 2
    only_error(capsys.readouterr().err, str(path))


# -- what `plan` writes ---------------------------------------------------------------------
def test_plan_writes_the_guides_yaml_shape_with_true_counts(tmp_path, small_db, capsys):
    src, counts = small_db
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    rc = migrate.run(
        [
            "plan",
            "--from",
            "sqlite",
            "--to",
            "postgres",
            "--components",
            "agent_state,workflow_state,sessions",
            "--source",
            str(src),
            "--target",
            UNREACHABLE,
            "--output",
            "migration.toml",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    text = (tmp_path / "migration.toml").read_text()
    data = yaml.safe_load(text)
    assert list(data) == [
        "version",
        "created_at",
        "source",
        "target",
        "components",
        "validation",
        "rollback",
    ]
    assert data["version"] == "1.0" and "version: '1.0'" in text  # a string, as in the guide
    created = dt.datetime.strptime(data["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= created <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert data["source"] == {"backend": "sqlite", "path": str(src.resolve())}
    assert data["target"] == {
        "backend": "postgres",
        "connection": UNREACHABLE,
        "key_layout": "llmspell",
        # the server and database it was made for, no user or password
        "identity": {"host": "127.0.0.1", "port": "1", "database": "x"},
    }
    assert data["components"] == [
        {"name": "agent_state", "estimated_count": counts["agent_state"], "batch_size": 500},
        {"name": "workflow_state", "estimated_count": counts["workflow_state"], "batch_size": 500},
        {"name": "sessions", "estimated_count": counts["sessions"], "batch_size": 500},
    ]
    assert counts["agent_state"] == 7 and counts["sessions"] == 5
    assert data["validation"] == {"checksum_sample_percent": 10, "full_comparison_threshold": 100}
    assert data["rollback"] == {"backup_enabled": True}

    assert 'Migration plan generated: "migration.toml"' in out
    assert "  Components: 3" in out
    assert "    - agent_state: 7 records (batch size: 500)" in out
    assert "execute --plan migration.toml --dry-run" in out

    # what was written reads back as the same plan
    plan = load(tmp_path / "migration.toml")
    assert plan.to_dict() == data


def test_plan_file_named_toml_is_yaml(tmp_path, small_db):
    src, _ = small_db
    assert (
        migrate.run(["plan", "--source", str(src), "--target", UNREACHABLE, "--output", "p.toml"])
        == 0
    )
    text = (tmp_path / "p.toml").read_text()
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(text)
    assert yaml.safe_load(text)["components"][0]["name"] == "agent_state"
    # and a .yaml name gives the same content
    assert (
        migrate.run(["plan", "--source", str(src), "--target", UNREACHABLE, "--output", "p.yaml"])
        == 0
    )
    a, b = load(tmp_path / "p.toml").to_dict(), load(tmp_path / "p.yaml").to_dict()
    a.pop("created_at"), b.pop("created_at")
    assert a == b


def test_default_components_are_phase_one(tmp_path, small_db):
    src, counts = small_db
    assert migrate.run(["plan", "--source", str(src), "--target", UNREACHABLE, "-o", "p.toml"]) == 0
    plan = load(tmp_path / "p.toml")
    assert plan.component_names == ["agent_state", "workflow_state", "sessions"]
    assert [c.estimated_count for c in plan.components] == [7, 4, 5]


@pytest.mark.parametrize(
    "count,expected",
    [
        (0, 500),
        (1, 500),
        (999, 500),
        (1_000, 1_000),
        (9_999, 1_000),
        (10_000, 5_000),
        (99_999, 5_000),
        (100_000, 5_000),  # capped: measured as fast as 10000 with less memory
        (5_000_000, 5_000),
    ],
)
def test_default_batch_size_by_volume(count, expected):
    size = default_batch_size(count)
    assert size == expected
    assert BATCH_MIN <= size <= BATCH_MAX


def test_plan_picks_batch_sizes_from_each_volume(tmp_path):
    src = tmp_path / "src" / "big.db"
    sample_file(
        src, SampleSpec(agents=1_000, workflows=3, sessions=2, kv=10_000, tenants=2, seed=5)
    )
    rc = migrate.run(
        [
            "plan",
            "--components",
            "agent_state,workflow_state,kv_store",
            "--source",
            str(src),
            "--target",
            UNREACHABLE,
            "-o",
            "p.toml",
        ]
    )
    assert rc == 0
    comps = {
        c.name: (c.estimated_count, c.batch_size) for c in load(tmp_path / "p.toml").components
    }
    assert comps == {
        "agent_state": (1_000, 1_000),
        "workflow_state": (3, 500),
        "kv_store": (10_000, 5_000),
    }


def test_batch_size_option(tmp_path, small_db, capsys):
    src, _ = small_db
    rc = migrate.run(
        [
            "plan",
            "--source",
            str(src),
            "--target",
            UNREACHABLE,
            "--batch-size",
            "2500",
            "-o",
            "p.toml",
        ]
    )
    assert rc == 0
    assert {c.batch_size for c in load(tmp_path / "p.toml").components} == {2500}
    assert "(batch size: 2500)" in capsys.readouterr().out


@pytest.mark.parametrize("size", ["99", "100001", "0", "-5"])
def test_batch_size_option_out_of_range(tmp_path, small_db, size, capsys):
    src, _ = small_db
    rc = migrate.run(
        [
            "plan",
            "--source",
            str(src),
            "--target",
            UNREACHABLE,
            "--batch-size",
            size,
            "-o",
            "p.toml",
        ]
    )
    assert rc == 2
    only_error(capsys.readouterr().err, f"--batch-size {size}", "100-100000")
    assert not (tmp_path / "p.toml").exists()


@pytest.mark.parametrize(
    "dsn,stored",
    [
        (SECRET_DSN, "postgresql://u@127.0.0.1:1/x"),
        (
            f"postgresql://u@127.0.0.1:1/x?password={SECRET}&sslmode=disable",
            "postgresql://u@127.0.0.1:1/x?sslmode=disable",
        ),
        (f"host=127.0.0.1 port=1 user=u password={SECRET} dbname=x", None),
    ],
    ids=["uri-userinfo", "uri-query", "key-value"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_target_password_never_written_or_printed(tmp_path, small_db, dsn, stored, as_json, capsys):
    src, _ = small_db
    argv = ["plan", "--source", str(src), "--target", dsn, "--output", "p.toml"]
    rc = migrate.run(argv + (["--json"] if as_json else []))
    assert rc == 0
    out = capsys.readouterr()
    text = (tmp_path / "p.toml").read_text()
    assert SECRET not in text
    assert SECRET not in out.out and SECRET not in out.err
    connection = yaml.safe_load(text)["target"]["connection"]
    if stored:
        assert connection == stored
    else:
        assert "password" not in connection and "host=127.0.0.1" in connection
    plan = load(tmp_path / "p.toml")  # the stored form is a valid plan (no password in it)
    assert plan.target_connection == connection
    shown = json.loads(out.out)["warnings"] if as_json else out.out.splitlines()
    assert any("LLMSPELL_MIGRATE_PASSWORD" in w and "password" in w for w in shown)
    # and nothing else in the working folder holds it either
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.suffix != ".db":
            assert SECRET.encode() not in f.read_bytes(), f


def test_plan_json_output(tmp_path, small_db, capsys):
    src, counts = small_db
    rc = migrate.run(
        [
            "plan",
            "--components",
            "sessions,kv_store",
            "--source",
            str(src),
            "--target",
            UNREACHABLE,
            "-o",
            "p.toml",
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["path"] == "p.toml"
    assert [(c["name"], c["estimated_count"]) for c in doc["plan"]["components"]] == [
        ("sessions", counts["sessions"]),
        ("kv_store", counts["kv_store"]),
    ]
    assert sum(doc["per_tenant"]["sessions"].values()) == counts["sessions"]
    assert doc["target"] == UNREACHABLE


def test_plan_warns_about_empty_components(tmp_path, small_db, capsys):
    import sqlite3

    src, _ = small_db
    conn = sqlite3.connect(src)
    conn.execute("DELETE FROM workflow_states")
    conn.commit()
    conn.close()
    rc = migrate.run(
        ["plan", "--source", str(src), "--target", UNREACHABLE, "-o", "p.toml", "--json"]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert any(w.startswith("workflow_state: no records") for w in doc["warnings"])
    assert load(tmp_path / "p.toml").components[1].estimated_count == 0
