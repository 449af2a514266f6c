"""Build SQLite databases the way llmspell's SQLite backend writes them (llmspell-storage
`backends/sqlite`): `set(key, value)` on agent_states and kv_store, typed saves on
workflow_states and sessions. Used by the key-routing tests."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from sources.sample_db import BASE_EPOCH, create_schema


class SqliteBackend:
    """The rows llmspell's SQLite backend writes, in one SQLite file."""

    def __init__(self, path: Path):
        self.path = path
        self.conn = sqlite3.connect(path)
        create_schema(self.conn)
        self.now = BASE_EPOCH

    def _tick(self) -> int:
        self.now += 1
        return self.now

    def set_agent(self, tenant: str, key: str, value: str) -> None:
        """SqliteAgentStateStorage::set: agent_id = after `agent:`, agent_type = third part."""
        assert key.startswith("agent:")
        parts = key.split(":")
        agent_type = parts[2] if len(parts) >= 3 else "unknown"
        now = self._tick()
        self.conn.execute(
            "INSERT INTO agent_states (tenant_id, agent_id, agent_type, state_data, checksum, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                tenant,
                key[len("agent:") :],
                agent_type,
                value,
                hashlib.sha256(value.encode()).hexdigest(),
                now,
                now,
            ),
        )

    def set_kv(self, tenant: str, key: str, value: bytes) -> None:
        """SqliteKVStorage::set: the key as given, the bytes verbatim, metadata never written."""
        now = self._tick()
        self.conn.execute(
            "INSERT INTO kv_store (tenant_id, key, value, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (tenant, key, value, now, now),
        )

    def save_workflow(self, tenant: str, workflow_id: str, state: str, name: str = "wf") -> None:
        now = self._tick()
        self.conn.execute(
            "INSERT INTO workflow_states (tenant_id, workflow_id, workflow_name, state_data, "
            "current_step, status, started_at, last_updated, created_at) "
            "VALUES (?, ?, ?, ?, 1, 'running', ?, ?, ?)",
            (tenant, workflow_id, name, state, now, now, now),
        )

    def save_session(self, tenant: str, session_id: str, data: str) -> None:
        now = self._tick()
        self.conn.execute(
            "INSERT INTO sessions (tenant_id, session_id, session_data, status, created_at, "
            "last_accessed_at, updated_at) VALUES (?, ?, ?, 'active', ?, ?, ?)",
            (tenant, session_id, data, now, now, now),
        )

    def close(self) -> None:
        self.conn.commit()
        self.conn.close()


SESSION = "6f1c2b3a-1d2e-4f50-8a9b-0c1d2e3f4a5b"
SAVED_SESSION = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"  # saved by the session manager in kv


def reachable_db(path: Path) -> Path:
    """Keys that all reach a record on PostgreSQL (some under another key), and numbers whose
    form JSONB changes."""
    db = SqliteBackend(path)
    for tenant in ("tenant-a", "tenant-b"):
        db.set_agent(tenant, "agent:worker:a2", '{"n": 1e16, "z": -0, "f": 2.5, "t": "x"}')
        db.set_agent(tenant, "agent:r1", '{"role": "router", "k": [1, 2.0]}')
        db.save_workflow(tenant, "wf-ok", '{"status": "running", "x": 2E3}')
        db.save_session(tenant, SESSION, '{"id": "s", "messages": []}')
        db.set_kv(tenant, "config:theme", b"dark")
        db.set_kv(tenant, f"session:{SESSION}:artifact_1", b"\x00\xffbytes")
    db.close()
    return path


def unreachable_db(path: Path) -> Path:
    """Every case llmspell's PostgreSQL backend cannot read back, next to reachable records."""
    reachable_db(path)
    db = SqliteBackend(path)
    t = "tenant-a"
    db.set_agent(t, "agent:x:y:z", '{"deep": true}')  # 4 parts: no key reaches it
    db.set_agent(t, "agent:A:dup", '{"who": "A"}')  # both read as agent_id 'dup'
    db.set_agent(t, "agent:B:dup", '{"who": "B"}')
    db.save_workflow(t, "wf:1", '{"status": "running"}')  # ':' in a workflow id
    db.set_kv(t, f"session:{SAVED_SESSION}", b"\x82\xa2id\xa1s")  # MessagePack session
    db.set_kv(t, "agent:kernel:state", b"{}")
    db.set_kv(t, "custom:workflow_7:state", b"{}")
    db.close()
    return path
