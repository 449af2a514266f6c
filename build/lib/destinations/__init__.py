"""The PostgreSQL side: the llmspell target schema, the embedded server, and the dlt destination
that writes keyed records into the tenant-scoped llmspell tables."""
