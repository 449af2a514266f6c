"""The workflows on one installation: execute and dry-run (`engine`), sync, rollback, verify,
prune. Each drives the stages; none prints: the face renders what they return."""
