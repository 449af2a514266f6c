"""The validation stage: DuckDB attached to the SQLite source and the PostgreSQL target proves
the copy by counts, sampled checksums and JSONB-aware semantic comparison."""
