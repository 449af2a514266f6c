"""Benchmarks for llmspell-migrate (not part of the test suite): python -m bench.run."""
