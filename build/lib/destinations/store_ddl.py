"""Functions and triggers llmspell's schema creates with its event, hook and artifact tables.

Kept apart from `llmspell_schema.sql` because their PL/pgSQL bodies hold `;` at line ends,
which that file's statement splitter would cut. Each entry runs once, right after its table
was created, and never over an existing table (which keeps whatever it has).
"""

from __future__ import annotations

_EVENT_LOG = r"""
CREATE OR REPLACE FUNCTION llmspell.create_event_log_partition(
    partition_start TIMESTAMPTZ, partition_end TIMESTAMPTZ
) RETURNS TEXT AS $$
DECLARE
    partition_name TEXT;
BEGIN
    partition_name := 'event_log_' || to_char(partition_start, 'YYYY_MM');
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'llmspell' AND c.relname = partition_name) THEN
        RETURN 'SKIPPED: Partition ' || partition_name || ' already exists';
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS llmspell.%I PARTITION OF llmspell.event_log '
                   'FOR VALUES FROM (%L) TO (%L)', partition_name, partition_start, partition_end);
    RETURN 'CREATED: Partition ' || partition_name;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

CREATE OR REPLACE FUNCTION llmspell.ensure_future_event_log_partitions()
RETURNS TEXT[] AS $$
DECLARE
    current_month TIMESTAMPTZ := date_trunc('month', CURRENT_TIMESTAMP);
    results TEXT[] := ARRAY[]::TEXT[];
    i INTEGER;
BEGIN
    FOR i IN 0..3 LOOP
        results := array_append(results, llmspell.create_event_log_partition(
            current_month + (i || ' months')::INTERVAL,
            current_month + ((i + 1) || ' months')::INTERVAL));
    END LOOP;
    RETURN results;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;

SELECT llmspell.ensure_future_event_log_partitions();
"""

_ARTIFACT_CONTENT = r"""
CREATE OR REPLACE FUNCTION llmspell.update_content_accessed_at() RETURNS TRIGGER AS $$
BEGIN
    IF OLD.last_accessed_at IS NULL OR NEW.last_accessed_at < (now() - INTERVAL '1 minute') THEN
        NEW.last_accessed_at = now();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trigger_content_accessed_at BEFORE UPDATE ON llmspell.artifact_content
    FOR EACH ROW EXECUTE FUNCTION llmspell.update_content_accessed_at();
"""

_ARTIFACTS = r"""
CREATE OR REPLACE FUNCTION llmspell.update_artifacts_updated_at() RETURNS TRIGGER AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trigger_artifacts_updated_at BEFORE UPDATE ON llmspell.artifacts
    FOR EACH ROW EXECUTE FUNCTION llmspell.update_artifacts_updated_at();

CREATE OR REPLACE FUNCTION llmspell.increment_content_refcount() RETURNS TRIGGER AS $$
BEGIN
    UPDATE llmspell.artifact_content
    SET reference_count = reference_count + 1, last_accessed_at = now()
    WHERE tenant_id = NEW.tenant_id AND content_hash = NEW.content_hash;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trigger_increment_refcount AFTER INSERT ON llmspell.artifacts
    FOR EACH ROW EXECUTE FUNCTION llmspell.increment_content_refcount();

CREATE OR REPLACE FUNCTION llmspell.decrement_content_refcount() RETURNS TRIGGER AS $$
BEGIN
    UPDATE llmspell.artifact_content SET reference_count = reference_count - 1
    WHERE tenant_id = OLD.tenant_id AND content_hash = OLD.content_hash;
    RETURN OLD;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER trigger_decrement_refcount AFTER DELETE ON llmspell.artifacts
    FOR EACH ROW EXECUTE FUNCTION llmspell.decrement_content_refcount();
"""

# llmspell table -> what its migration creates with it besides the table and its indexes.
AFTER_CREATE = {
    "event_log": _EVENT_LOG,
    "artifact_content": _ARTIFACT_CONTENT,
    "artifacts": _ARTIFACTS,
}
