"""The bottom layer every package imports and that imports none of them: typed errors and exit
codes, where the tool keeps its state (settings), and private files. Importing it switches dlt
telemetry off before dlt loads."""

from core import settings as _settings  # noqa: F401  (telemetry off before dlt loads)
