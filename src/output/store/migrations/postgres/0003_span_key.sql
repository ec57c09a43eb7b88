-- PostgreSQL: as ../0003_span_key.sql (SQLite), span identity is
-- (trace_id, span_id), as in W3C Trace Context, where a span id is unique
-- within its trace; the span id keeps an index of its own. PostgreSQL
-- changes the key in place.
ALTER TABLE spans DROP CONSTRAINT IF EXISTS spans_pkey;
DROP INDEX IF EXISTS spans_trace;
CREATE UNIQUE INDEX spans_trace ON spans (trace_id, span_id);
CREATE INDEX spans_span ON spans (span_id);
