"""The SQLite side: what an llmspell component is, how to read it read-only, and the dlt source."""

# The registry first: importing it registers every store module (memory_stores included),
# whichever sources module is imported first.
from sources import components as _components  # noqa: E402,F401
