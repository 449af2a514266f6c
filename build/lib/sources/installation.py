"""Find an llmspell installation's SQLite files the way llmspell itself finds them.

llmspell 0.14 (`llmspell-config/src/lib.rs`): the config file is discovered in the working
folder (`llmspell.toml`, `.llmspell.toml`, `config/llmspell.toml`, `.config/llmspell.toml`),
then in `$HOME` (`.llmspell.toml`, `.config/llmspell.toml`), then at
`$XDG_CONFIG_HOME/llmspell/config.toml`; the first hit wins. Its storage paths:
`storage.sqlite.database_path`, else `storage.database_path`, else
`<storage.base_dir>/data/llmspell.db` with `base_dir` defaulting to `~/.llmspell`; a leading
`~` is `$HOME`, a relative path is relative to the working folder, and
`LLMSPELL_STORAGE_BASE_DIR` / `LLMSPELL_STORAGE_DATABASE_PATH` override the file. RAG keeps
its vectors in a second file, `rag.vector_storage.persistence_path`: a folder (or a path
without an extension) means `<path>/vectors.db`; llmspell does not expand `~` there
(`llmspell-bridge/src/infrastructure.rs`).

Without a config the tool looks at `~/.llmspell/data/llmspell.db` (llmspell's default), then
at the llmspell migration guide's example path.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import SourceError

CWD_CONFIGS = ("llmspell.toml", ".llmspell.toml", "config/llmspell.toml", ".config/llmspell.toml")
HOME_CONFIGS = (".llmspell.toml", ".config/llmspell.toml")
ENV_BASE_DIR = "LLMSPELL_STORAGE_BASE_DIR"
ENV_DATABASE_PATH = "LLMSPELL_STORAGE_DATABASE_PATH"
GUIDE_PATH = "~/.local/share/llmspell/llmspell.db"
MAIN, RAG = "main", "rag_vectors"
GIVEN = "--source"


@dataclass(frozen=True)
class SourceFile:
    """One SQLite file of the installation, and why the tool reads it."""

    path: Path
    role: str  # main | rag_vectors | given
    why: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "role": self.role, "found_by": self.why}


@dataclass
class Installation:
    files: list[SourceFile]
    config: Path | None = None
    # files the config names that are not on disk (llmspell has not written them yet)
    missing: list[SourceFile] = field(default_factory=list)
    looked_at: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]


class Resolver:
    """Paths as llmspell resolves them, for one working folder, home and environment."""

    def __init__(self, cwd: Path | None = None, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env
        self.cwd = Path.cwd() if cwd is None else cwd
        home = self.env.get("HOME") or self.env.get("USERPROFILE")
        self.home = Path(home) if home else None

    def storage_path(self, raw: str) -> Path:
        """`~` is home (storage paths only); relative is relative to the working folder."""
        if self.home and (raw == "~" or raw.startswith("~/")):
            return self.home / raw[2:]
        return self.absolute(raw)

    def absolute(self, raw: str | Path) -> Path:
        path = Path(raw)
        return path if path.is_absolute() else self.cwd / path

    def find_config(self) -> tuple[Path | None, list[str]]:
        looked: list[str] = []
        candidates = [self.cwd / name for name in CWD_CONFIGS]
        if self.home:
            candidates += [self.home / name for name in HOME_CONFIGS]
        xdg = self.env.get("XDG_CONFIG_HOME")
        if xdg:
            candidates.append(Path(xdg) / "llmspell" / "config.toml")
        for path in candidates:
            looked.append(f"{path} (llmspell config)")
            if path.is_file():
                return path, looked
        return None, looked


def read_config(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(
            f"llmspell config not found: {path}", "Pass --config the path of llmspell.toml."
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(
            f"{path} is not a valid llmspell config (TOML): {exc}",
            "Fix the file (llmspell would refuse it too), or pass --source PATH instead.",
        ) from None
    except OSError as exc:
        raise SourceError(f"Cannot read {path}: {exc.strerror}", "Check its permissions.") from None


def _table(data: dict, dotted: str, where: Path) -> dict:
    node: object = data
    for part in dotted.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if not isinstance(node, dict):
        raise SourceError(
            f"{where}: [{dotted}] must be a table", "Fix the config (llmspell would refuse it too)."
        )
    return node


def _string(table: dict, key: str, dotted: str, where: Path) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SourceError(
            f"{where}: {dotted}.{key} must be a path (a non-empty string), got {value!r}",
            "Fix the config (llmspell would refuse it too).",
        )
    return value


def main_database(config: dict, where: Path | None, r: Resolver) -> tuple[Path, str]:
    """llmspell's main database and the setting that put it there."""
    src = f" in {where}" if where else ""
    storage = _table(config, "storage", where) if where else {}
    sqlite = _table(config, "storage.sqlite", where) if where else {}
    if where and (raw := _string(sqlite, "database_path", "storage.sqlite", where)):
        return r.storage_path(raw), f"storage.sqlite.database_path{src}"
    raw = r.env.get(ENV_DATABASE_PATH)
    if raw:
        return r.storage_path(raw), f"${ENV_DATABASE_PATH}"
    if where and (raw := _string(storage, "database_path", "storage", where)):
        return r.storage_path(raw), f"storage.database_path{src}"
    base_raw = r.env.get(ENV_BASE_DIR)
    how = f"${ENV_BASE_DIR}"
    if not base_raw and where:
        base_raw = _string(storage, "base_dir", "storage", where)
        how = f"storage.base_dir{src}"
    if base_raw:
        base = r.storage_path(base_raw)
    else:
        base = (r.home or Path(".")) / ".llmspell"
        how = "llmspell's default base_dir ~/.llmspell"
    return base / "data" / "llmspell.db", f"<base_dir>/data/llmspell.db ({how})"


def rag_database(config: dict, where: Path, r: Resolver) -> tuple[Path, str] | None:
    vs = _table(config, "rag.vector_storage", where)
    raw = _string(vs, "persistence_path", "rag.vector_storage", where)
    if raw is None:
        return None  # llmspell keeps RAG vectors in memory: nothing on disk
    path = r.absolute(raw)  # llmspell takes this path as written: no `~`
    if path.is_dir() or not path.suffix:
        return path / "vectors.db", f"rag.vector_storage.persistence_path in {where} (a folder)"
    return path, f"rag.vector_storage.persistence_path in {where}"


def from_config(path: Path, r: Resolver, why: str) -> Installation:
    config = read_config(path)
    inst = Installation(files=[], config=path)
    main, main_why = main_database(config, path, r)
    for file, role, reason in [(main, MAIN, main_why), *_rag(config, path, r)]:
        entry = SourceFile(file, role, f"{reason}; config {why}")
        (inst.files if file.is_file() else inst.missing).append(entry)
    return inst


def _rag(config: dict, path: Path, r: Resolver) -> list[tuple[Path, str, str]]:
    found = rag_database(config, path, r)
    return [(found[0], RAG, found[1])] if found else []


def discover(
    config: str | Path | None = None, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> Installation:
    """The installation's files: from `config` when given, else as llmspell finds its
    config, else llmspell's default database, else the guide's path. Raises SourceError
    listing every place looked at when there is no database."""
    r = Resolver(cwd, env)
    if config is not None:
        path = r.absolute(Path(config).expanduser())
        inst = from_config(path, r, f"{path} (--config)")
        looked = [f"{path} (--config)"]
    else:
        found, looked = r.find_config()
        if found is not None:
            inst = from_config(found, r, f"{found} (found as llmspell finds it)")
        else:
            inst = Installation(files=[])
            main, why = main_database({}, None, r)
            guide = r.storage_path(GUIDE_PATH)
            for path, reason in ((main, why), (guide, "the migration guide's example path")):
                looked.append(f"{path} ({reason})")
                if path.is_file():
                    inst.files.append(SourceFile(path, MAIN, f"{reason}; no llmspell config"))
                    break
    inst.looked_at = looked + [f"{f.path} ({f.why})" for f in inst.missing]
    if not inst.files:
        raise SourceError(
            "No llmspell database found. Looked at: " + "; ".join(inst.looked_at),
            "Pass --source PATH (repeat it for each file), or --config with llmspell's "
            "config file.",
        )
    return inst


def given(paths: list[str | Path], cwd: Path | None = None) -> Installation:
    """Files named on the command line (`--source`, repeatable), in that order."""
    r = Resolver(cwd)
    files = [
        SourceFile(r.absolute(Path(p).expanduser()), MAIN if i == 0 else "given", GIVEN)
        for i, p in enumerate(paths)
    ]
    return Installation(files=files)


def left_out(inst: Installation, planned: list[Path]) -> list[str]:
    """One warning per file llmspell's config names that the plan does not read."""
    have = {_same(p) for p in planned}
    return [
        f"{f.path} ({f.why}) is not in this plan: add --source {f.path}"
        for f in inst.files
        if _same(f.path) not in have
    ]


def _same(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path
