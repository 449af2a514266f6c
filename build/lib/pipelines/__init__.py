"""Entry points of llmspell-migrate: the CLI (`python -m pipelines.migrate`), the Python API,
the plan format and the engine that drives source -> destination -> validation."""
