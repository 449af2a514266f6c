"""The SQLite side: what an llmspell component is, how to read it read-only, and the dlt source."""
