"""Generate a realistic llmspell SQLite database for the demo, the tests and the benchmarks.

The migration has to cope with what a real llmspell installation holds: several tenants, the
same key under more than one tenant, nested JSON with unicode, emoji, floats and big integers
written in several styles (so the stored text is not canonical JSON), binary blobs with NUL and
0xFF bytes, and NULL timestamps. Everything comes from one seeded `random.Random`, so a seed
always gives the same database, row for row.

Command line: `python -m sources.sample_db PATH [--total N | --agents N ...] [--overwrite]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import sys
import tempfile
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path
from typing import Any

from core import child
from core.model.components import (
    AGENT_STATE,
    EVENTS,
    HOOKS,
    KV_STORE,
    SESSION_STATUSES,
    SESSIONS,
    WORKFLOW_STATE,
    WORKFLOW_STATUSES,
    Component,
)
from sources import sample_phase3
from sources.memory_sample import MemorySpec, add_memory
from sources.sqlite_schema import (  # noqa: F401  (re-exported for tests)
    BASE_EPOCH,
    DAY,
    MIGRATIONS,
    SCHEMA_SQL,
    create_schema,
)

CHUNK = 5_000

TENANT_NAMES = (
    "acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell",
    "cyberdyne",
)  # fmt: skip
AGENT_TYPES = ("llm", "tool", "workflow", "router", "research", "coder", "summarizer")
EXECUTION_STATES = ("idle", "running", "paused", "completed", "failed")
MODELS = (
    "openai/gpt-4o-mini", "anthropic/claude-3-5-sonnet", "ollama/llama3.2", "groq/mixtral-8x7b",
    "candle/qwen2.5-0.5b",
)  # fmt: skip
ROLES = ("user", "assistant", "system", "tool")
TAGS = (
    "prod", "staging", "rag", "research", "support", "billing", "测试", "données", "batch",
    "experimental", "🧪", "nightly",
)  # fmt: skip
PEOPLE = ("alice", "bob", "chloé", "dmitri", "eun-ji", "françois", "günther", "ha-yoon", "system")
TOPICS = ("pricing", "onboarding", "latency", "embeddings", "contracts", "travel", "東京 office")
STEP_NAMES = (
    "fetch_sources", "chunk_documents", "embed", "retrieve", "rerank", "draft_answer",
    "review", "tool_call", "summarize", "notify", "persist", "cleanup",
)  # fmt: skip
SENTENCES = (
    "Summarize the quarterly report and list the three biggest risks.",
    "The café on the corner now serves a naïve smoothie bowl — delicious.",
    "Schedule the deployment for Friday 🚀 and notify the on-call engineer.",
    "東京の天気は明日晴れです。会議は午後三時に始まります。",
    "Retrieved 12 documents from the vector store; top score 0.8731.",
    "Please translate this paragraph into German: „Grüße aus München“.",
    "Error: upstream timeout after 30s, retrying with exponential backoff.",
    "Le résumé doit être prêt avant la réunion de jeudi à Genève.",
    'Here is the JSON you asked for: {"ok": true, "items": [1, 2, 3]}.',
    "Привет! Проверь, пожалуйста, последние изменения в репозитории.",
    "The tool returned 42 rows; 3 were filtered out as duplicates ✅.",
    "Compute the embedding for each chunk and store it under its tenant.",
    "Customer asked about the refund policy for annual plans 💳.",
    "Tab\tseparated\tvalues and a line break\nin the middle of a message.",
    "El informe está listo; revisa la sección de métricas, por favor.",
    "Backslashes \\ and quotes \" survive a round trip, don't they?",
    "Latency p99 dropped from 840 ms to 212 ms after the cache change 📉.",
    "안녕하세요, 요청하신 요약을 첨부했습니다.",
    "Call get_weather(city='Zürich') and format the result as a table.",
    "Emoji stress test: 👩‍💻 🏳️‍🌈 🇯🇵 — zero-width joiners included.",
)
# Serialization styles (and their shares) so stored text is rarely canonical JSON. indent=2 uses
# json's pure-Python encoder, so it stays rare; the newline separators give a similar look in C.
_STYLES: tuple[dict[str, Any], ...] = (
    {"ensure_ascii": False},  # ", " and ": "
    {"ensure_ascii": False, "separators": (",", ":")},  # compact, like serde_json
    {"ensure_ascii": True},  # \uXXXX escapes for every non-ASCII character
    {"ensure_ascii": False, "separators": (",\n  ", " : ")},
    {"ensure_ascii": False, "indent": 2},
)
_STYLE_CUM = tuple(accumulate((55, 20, 14, 8, 3)))


@dataclass
class SampleSpec:
    """How many records of each component to write, over how many tenants, from which seed."""

    agents: int
    workflows: int
    sessions: int
    kv: int
    tenants: int = 3
    seed: int = 42
    memory: MemorySpec | None = None  # episodic/semantic/procedural memory rows, if any
    events: int = 0  # Phase 3 stores (sources/sample_phase3.py)
    hooks: int = 0
    artifacts: int = 0
    large_artifact: bool = False  # one artifact of 1 MiB or more (a large object in PostgreSQL)

    @classmethod
    def scaled(cls, total: int, tenants: int = 3, seed: int = 42) -> SampleSpec:
        """Split `total` records into a realistic mix (40% agents, 15% workflows, 20% sessions,
        the rest kv) whose counts add up to exactly `total`."""
        agents = total * 40 // 100
        workflows = total * 15 // 100
        sessions = total * 20 // 100
        kv = total - agents - workflows - sessions
        return cls(agents, workflows, sessions, kv, tenants=tenants, seed=seed)

    @property
    def total(self) -> int:
        return self.agents + self.workflows + self.sessions + self.kv


def tenant_ids(count: int) -> list[str]:
    """Tenant ids `tenant-acme`, `tenant-globex`, ..., then `tenant-011`, ... beyond the names."""
    return [
        f"tenant-{TENANT_NAMES[i]}" if i < len(TENANT_NAMES) else f"tenant-{i + 1:03d}"
        for i in range(count)
    ]


class _Gen:
    """Row factories sharing one seeded RNG; each yields rows in table column order."""

    def __init__(self, spec: SampleSpec) -> None:
        self.rng = random.Random(spec.seed)
        self.rnd = self.rng.random
        self.tenants = tenant_ids(max(1, spec.tenants))
        # Uneven spread: tenant k gets weight 1/(k+1) (Zipf-like), so the first tenant is busiest.
        weights = [1.0 / (k + 1) for k in range(len(self.tenants))]
        total = sum(weights)
        acc = 0.0
        self.cum_weights = []
        for w in weights:
            acc += w / total
            self.cum_weights.append(acc)
        # A bounded sample of recent sessions, so kv keys can point at real session ids.
        self.recent_sessions: list[tuple[str, str]] = []

    # -- small helpers -------------------------------------------------------------------------

    def hex_id(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def uuid4(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def below(self, n: int) -> int:
        """Like rng.randrange(n), several times faster (this runs millions of times)."""
        return int(self.rnd() * n)

    def between(self, lo: int, hi: int) -> int:
        """Like rng.randint(lo, hi), faster."""
        return lo + int(self.rnd() * (hi - lo + 1))

    def pick(self, seq: Sequence[Any]) -> Any:
        """Like rng.choice(seq), faster."""
        return seq[int(self.rnd() * len(seq))]

    def tenant(self) -> str:
        k = bisect_right(self.cum_weights, self.rnd() * self.cum_weights[-1])
        return self.tenants[min(k, len(self.tenants) - 1)]  # min: float rounding at the top

    def tenant_group(self, max_size: int) -> list[str]:
        """One tenant, or (sometimes) several distinct tenants sharing the same key."""
        first = self.tenant()
        if len(self.tenants) < 2 or self.rng.random() >= 0.15:
            return [first]
        others = [t for t in self.tenants if t != first]
        size = min(len(others), self.between(1, max_size - 1))
        return [first, *self.rng.sample(others, size)]

    def text(self, parts: int) -> str:
        rnd = self.rnd
        n = len(SENTENCES)
        if parts == 1:
            return SENTENCES[int(rnd() * n)]
        return " ".join([SENTENCES[int(rnd() * n)] for _ in range(parts)])

    def dumps(self, doc: Any) -> str:
        style = _STYLES[
            min(bisect_right(_STYLE_CUM, self.rnd() * _STYLE_CUM[-1]), len(_STYLES) - 1)
        ]
        return json.dumps(doc, **style)

    def times(self) -> tuple[int, int]:
        created = BASE_EPOCH + self.below(180 * DAY)
        return created, created + self.below(30 * DAY)

    # -- agent_states --------------------------------------------------------------------------

    def agents(self) -> Iterator[tuple]:
        """Rows as llmspell's SQLite backend writes `set("agent:<type>:agent-N")`: agent_id is
        everything after `agent:` (`<type>:agent-N`), agent_type the third part (`agent-N`)."""
        group = 0
        while True:
            group += 1
            agent_id = f"agent-{group}"
            agent_type = AGENT_TYPES[group % len(AGENT_TYPES)]
            for tenant in self.tenant_group(4):
                state_data = self.dumps(self.agent_doc(agent_id, agent_type, tenant))
                created, updated = self.times()
                yield (
                    self.hex_id(),
                    tenant,
                    f"{agent_type}:{agent_id}",
                    agent_id,
                    state_data,
                    self.between(1, 3),
                    self.between(1, 20),
                    hashlib.sha256(state_data.encode("utf-8")).hexdigest(),
                    created,
                    updated,
                )

    def agent_doc(self, agent_id: str, agent_type: str, tenant: str) -> dict[str, Any]:
        rng = self.rng
        history = [
            {"role": ROLES[i % 2] if i else "system", "content": self.text(1 + (i % 2))}
            for i in range(self.between(2, 5))
        ]
        return {
            "agent_id": agent_id,
            "state": {
                "execution_state": self.pick(EXECUTION_STATES),
                "iteration": self.between(0, 500),
                "conversation_history": history,
                "context": {
                    "tenant": tenant,
                    "topic": self.pick(TOPICS),
                    "scores": [round(rng.random(), 4) for _ in range(self.between(0, 4))],
                    "token_budget": rng.getrandbits(63) | 2**53,  # exact only as a bignum
                    "window": [[1, 2], [3, [4, 5.5]]] if rng.random() < 0.3 else [],
                },
            },
            "metadata": {
                "name": f"{agent_type}-{self.pick(TOPICS)}",
                "description": self.text(1),
                "tags": rng.sample(TAGS, self.between(0, 3)),
                "created_by": self.pick(PEOPLE),
            },
            "config": {
                "model": self.pick(MODELS),
                "temperature": self.pick((0.0, 0.2, 0.7, 1.0, 1.5)),
                "top_p": 1.0,
                "max_tokens": 4096,
            },
        }

    # -- workflow_states -----------------------------------------------------------------------

    def workflows(self) -> Iterator[tuple]:
        rng = self.rng
        group = 0
        row = 0
        while True:
            group += 1
            workflow_id = f"wf-{group}"
            name = None if rng.random() < 0.2 else f"{self.pick(TOPICS)} pipeline #{group}"
            for tenant in self.tenant_group(3):
                # The first rows cycle through every status, so small samples still hold all.
                status = (
                    WORKFLOW_STATUSES[row]
                    if row < len(WORKFLOW_STATUSES)
                    else (rng.choices(WORKFLOW_STATUSES, weights=(10, 15, 55, 12, 8))[0])
                )
                row += 1
                yield self.workflow_row(tenant, workflow_id, name, status)

    def workflow_row(self, tenant: str, workflow_id: str, name: str | None, status: str) -> tuple:
        rng = self.rng
        total_steps = self.between(2, 6)
        created = BASE_EPOCH + self.below(180 * DAY)
        started = None if status == "pending" else created + self.below(600)
        if status == "pending":
            done = 0
        elif status == "completed":
            done = total_steps
        else:
            done = self.below(total_steps)
        finished = status in ("completed", "failed", "cancelled")
        completed = started + 1 + self.below(4 * 3_600 - 1) if finished and started else None
        last_updated = max(completed or started or created, created) + self.below(60)
        steps = [
            {
                "name": STEP_NAMES[(i * 5 + len(workflow_id)) % len(STEP_NAMES)],
                "status": "completed" if i < done else ("running" if i == done else "pending"),
                "duration_ms": self.between(5, 90_000) if i < done else None,
            }
            for i in range(total_steps)
        ]
        if status == "failed":
            steps[done]["status"] = "failed"
        doc = {
            "workflow_id": workflow_id,
            "steps": steps,
            "inputs": {"query": self.text(1), "top_k": self.between(1, 20)},
            "outputs": {s["name"]: self.text(1) for s in steps[: min(done, 2)]},
            "variables": {"retries": self.between(0, 3), "ratio": round(rng.random(), 6)},
            "error": "step failed: upstream timeout ⏱️" if status == "failed" else None,
        }
        return (
            tenant,
            workflow_id,
            name,
            self.dumps(doc),
            done,
            status,
            started,
            completed,
            last_updated,
            created,
        )

    # -- sessions ------------------------------------------------------------------------------

    def sessions(self) -> Iterator[tuple]:
        rng = self.rng
        row = 0
        while True:
            tenant = self.tenant()
            session_id = self.uuid4()
            status = (
                SESSION_STATUSES[row]
                if row < len(SESSION_STATUSES)
                else (rng.choices(SESSION_STATUSES, weights=(50, 35, 15))[0])
            )
            row += 1
            if len(self.recent_sessions) < 1_000:
                self.recent_sessions.append((tenant, session_id))
            else:
                self.recent_sessions[self.below(1_000)] = (tenant, session_id)
            created = BASE_EPOCH + self.below(180 * DAY)
            n_messages = self.between(10, 16)
            messages = [
                {
                    "role": ROLES[i % 2],
                    "content": self.text(1 + i % 3),
                    "timestamp": created + i * 37,
                }
                for i in range(n_messages)
            ]
            last_accessed = created + n_messages * 37 + self.below(7 * DAY)
            updated = last_accessed - self.below(60)
            if status == "expired":
                expires = last_accessed + 1 + self.below(DAY - 1)
            else:
                expires = None if rng.random() < 0.3 else last_accessed + 30 * DAY
            doc = {
                "session_id": session_id,
                "messages": messages,
                "context": {"tenant": tenant, "topic": self.pick(TOPICS), "turns": n_messages},
                "preferences": {
                    "language": self.pick(("en", "fr", "ja", "de", "ko")),
                    "theme": self.pick(("dark", "light")),
                    "notifications": rng.random() < 0.5,
                },
            }
            yield (
                self.hex_id(),
                tenant,
                session_id,
                self.dumps(doc),
                status,
                created,
                last_accessed,
                expires,
                self.between(0, 20),
                updated,
            )

    # -- kv_store ------------------------------------------------------------------------------

    def kv(self) -> Iterator[tuple]:
        rng = self.rng
        row = 0
        while True:
            row += 1
            kind = rng.random()
            if kind < 0.4:
                if self.recent_sessions:
                    tenant, sid = self.pick(self.recent_sessions)
                else:
                    tenant, sid = self.tenant(), self.uuid4()
                key = f"session:{sid}:artifact_{row}"
            elif kind < 0.7:
                tenant = self.tenant()
                key = f"config:{tenant}:{self.pick(STEP_NAMES)}_{row}"
            else:
                tenant = self.tenant()
                key = f"cache:embedding:{row}"
            shape = rng.random()
            if row == 1 or shape < 0.05:
                value = b""
            elif shape < 0.35:
                value = self.dumps({"n": row, "note": self.text(1)}).encode("utf-8")
            else:
                value = b"\x00\xff" + rng.randbytes(self.below(2_047))
            metadata = (
                None
                if rng.random() < 0.3
                else self.dumps({"content_type": "application/octet-stream", "size": len(value)})
            )
            created, updated = self.times()
            yield (self.hex_id(), tenant, key, value, metadata, created, updated)


# SQLite-only columns the components leave out (they have no place in PostgreSQL).
_SQLITE_EXTRA = {SESSIONS.name: ["id"]}


def _plan(spec: SampleSpec) -> list[tuple[Component, str, Iterator[tuple], int]]:
    """Per component, in load order: its INSERT statement, its row generator and its count."""
    gen = _Gen(spec)
    parts: list[tuple[Component, Callable[[], Iterator[tuple]], int]] = [
        (AGENT_STATE, gen.agents, spec.agents),
        (WORKFLOW_STATE, gen.workflows, spec.workflows),
        (SESSIONS, gen.sessions, spec.sessions),  # before kv: kv keys reuse session ids
        (KV_STORE, gen.kv, spec.kv),
    ]
    plan = []
    for component, rows, count in parts:
        columns = _SQLITE_EXTRA.get(component.name, []) + component.column_names
        sql = (
            f"INSERT INTO {component.sqlite_table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        plan.append((component, sql, rows(), max(0, count)))
    return plan


def _chunks(spec: SampleSpec) -> Iterator[tuple[str, list[tuple]]]:
    """Yield (INSERT statement, rows) in chunks of at most CHUNK rows, component after component,
    so only a few chunks ever exist at once."""
    for _, sql, rows, count in _plan(spec):
        left = count
        while left > 0:
            chunk = list(islice(rows, min(CHUNK, left)))
            yield sql, chunk
            left -= len(chunk)


def child_main() -> None:
    """Child-process body (`core.child`): generate the chunks and hand them over. Building rows
    costs more CPU than storing them, and a thread would fight the writer for the GIL, so a
    process it is: a fresh interpreter running this module, never the caller's script."""
    spec, out = child.child_streams()
    try:
        for item in _chunks(spec):
            child.send(out, item)
        child.send(out, None)
    except BaseException as exc:  # handed to the writer, which re-raises it
        child.send(out, f"sample generator failed: {exc!r}")
    finally:
        out.close()


def _parallel_chunks(spec: SampleSpec) -> Iterator[tuple[str, list[tuple]]]:
    """The same chunks as `_chunks(spec)`, in the same order, generated by a child process
    through a pipe (memory stays a chunk or two: the child waits while the pipe is full)."""
    with tempfile.TemporaryFile() as log:
        proc = child.start("sources.sample_db", spec, log)
        try:
            while True:
                try:
                    item = child.receive(proc.stdout)
                except EOFError:
                    code = proc.wait()
                    raise RuntimeError(
                        f"sample generator exited ({code}): {child.stderr_tail(log)}"
                    ) from None
                if item is None:
                    return
                if isinstance(item, str):
                    raise RuntimeError(item)
                yield item
        finally:
            child.stop(proc)


# Below this many records a child process costs more than it saves.
PARALLEL_MIN = 50_000


def generate(path: str | Path, spec: SampleSpec, *, overwrite: bool = False) -> dict[str, int]:
    """Write a new llmspell SQLite file at `path` following `spec`; return the row count per
    component name. Refuses an existing file unless `overwrite` (then removes its -wal/-shm too,
    so no stale WAL is replayed into the new file)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if overwrite:
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)

    chunks = _parallel_chunks(spec) if spec.total >= PARALLEL_MIN else _chunks(spec)
    conn = sqlite3.connect(path)
    try:
        create_schema(conn)
        # A brand-new file has nothing to protect: skip the journal while loading (each page is
        # then written once instead of WAL + checkpoint), and turn WAL back on at the end.
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-65536")
        for sql, chunk in chunks:
            with conn:
                conn.executemany(sql, chunk)
        memory = add_memory(conn, spec.memory) if spec.memory else {}
        sample_phase3.add(
            conn,
            spec.seed,
            tenant_ids(spec.tenants),
            events_count=spec.events,
            hooks_count=spec.hooks,
            artifacts_count=spec.artifacts,
            large_artifact=spec.large_artifact,
            end=BASE_EPOCH,
        )
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA journal_mode=WAL")
        tables = {c.name: c.sqlite_table for c in (AGENT_STATE, WORKFLOW_STATE, SESSIONS, KV_STORE)}
        # Phase 3 stores are counted when the spec asks for them (their tables always exist).
        wanted = {EVENTS: spec.events, HOOKS: spec.hooks}
        tables.update({c.name: c.sqlite_table for c, n in wanted.items() if n})
        if spec.artifacts:
            tables["artifacts"] = "artifacts"
        counts = {
            name: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for name, table in tables.items()
        } | memory
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        if hasattr(chunks, "close"):
            chunks.close()  # stops the child process if loading failed half-way
        conn.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: generate a sample database and print the counts."""
    parser = argparse.ArgumentParser(
        prog="python -m sources.sample_db", description="Generate a sample llmspell SQLite DB."
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--agents", type=int, default=400)
    parser.add_argument("--workflows", type=int, default=150)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--kv", type=int, default=250)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--total", type=int, help="split N records into the default mix")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--memory", action="store_true", help="add episodic, semantic and procedural memory"
    )
    args = parser.parse_args(argv)
    if args.total is not None:
        spec = SampleSpec.scaled(args.total, tenants=args.tenants, seed=args.seed)
    else:
        spec = SampleSpec(
            args.agents, args.workflows, args.sessions, args.kv, args.tenants, args.seed
        )
    if args.memory:
        spec.memory = MemorySpec(tenants=("default", *tenant_ids(max(1, spec.tenants))))
    try:
        counts = generate(args.path, spec, overwrite=args.overwrite)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, n in counts.items():
        print(f"{name}: {n}")
    print(f"total: {sum(counts.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
