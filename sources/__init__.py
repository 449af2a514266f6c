"""The SQLite side: how to read an llmspell installation read-only, check its records, and the
dlt source (what a component is: `core.model`)."""
