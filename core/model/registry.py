"""Every migrated component, listed once and in order: the one registry every side reads.

Memory stores are moved in parts (one per PostgreSQL table); a part names its store as its
`group`, and the groups are derived from the parts here.
"""

from __future__ import annotations

from core.errors import UsageError
from core.model.components import (
    AGENT_STATE,
    ARTIFACTS,
    EVENTS,
    HOOKS,
    KV_STORE,
    SESSIONS,
    WORKFLOW_STATE,
    Component,
)
from core.model.memory import ENTITIES, PROCEDURAL, RELATIONSHIPS, VECTOR_PARTS

# In copy order (artifacts are copied by their own store after the dlt copy, see
# `Component.own_copy`).
COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        AGENT_STATE,
        WORKFLOW_STATE,
        SESSIONS,
        KV_STORE,
        EVENTS,
        HOOKS,
        ARTIFACTS,
        *VECTOR_PARTS,
        ENTITIES,
        RELATIONSHIPS,
        PROCEDURAL,
    )
}
# Stores moved as several parts (one per PostgreSQL table): CLI name -> part names.
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(c.name for c in COMPONENTS.values() if c.group == group)
    for group in dict.fromkeys(c.group for c in COMPONENTS.values() if c.group)
}
# The names a user passes: plain components and groups, in registry order.
SUPPORTED = tuple(dict.fromkeys(c.group or c.name for c in COMPONENTS.values()))
# Components the llmspell guide names for later phases: recognised, refused with a clear message.
LATER_PHASES: dict[str, str] = {}
# The SQLite tables each not-yet-migrated store keeps its records in (the first one counts
# them), so `plan` can say what a plan leaves behind.
LATER_TABLES: dict[str, tuple[str, ...]] = {}
ALL = "all"


def get(name: str) -> Component:
    """The component called `name`, or a UsageError naming the supported ones."""
    if name in COMPONENTS:
        return COMPONENTS[name]
    if name in GROUPS:
        raise UsageError(
            f"{name} is migrated in parts: {', '.join(GROUPS[name])}",
            f"Make the plan with `plan --components {name}`; it lists the parts.",
        )
    if name == "api_keys":
        raise UsageError(
            "api_keys: llmspell keeps no API keys in SQLite, so there is nothing to migrate",
            "llmspell holds API keys in memory, or in PostgreSQL itself: re-create them with "
            "llmspell against the PostgreSQL backend after the cutover.",
        )
    phase = LATER_PHASES.get(name)
    hint = (
        f"{name} is planned for {phase}; migrate it with llmspell itself for now."
        if phase
        else "Check the component name's spelling."
    )
    raise UsageError(f"Only {', '.join(SUPPORTED)} are supported. Got: {name}", hint)


def parse_list(text: str) -> list[Component]:
    """Parse `agent_state,sessions` into components, refusing unknown and repeated names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == [ALL]:
        return list(COMPONENTS.values())
    if len(set(names)) == len(names):
        names = [part for n in names for part in GROUPS.get(n, (n,))]
    if not names:
        raise UsageError(
            "No component given.", f"Pass --components with any of: {', '.join(SUPPORTED)}"
        )
    if len(set(names)) != len(names):
        raise UsageError(f"A component is named twice: {text}", "Name each component once.")
    return [get(n) for n in names]
