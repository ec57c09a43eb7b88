-- PostgreSQL: as ../0004_user_session.sql (SQLite). The trace list filters
-- by user and by session. Without an index a rare value meant a walk over
-- every span (~3 s at 10,000,000 spans). Partial indexes: only spans that
-- carry a user or a session pay for the insert, and an `= $n` filter
-- implies the NOT NULL that lets the planner use them. Built inside the
-- migration transaction (not CONCURRENTLY): on a large shared store the
-- first upgraded replica holds writes for the build; every replica's
-- batcher keeps its spans queued and retries meanwhile.
CREATE INDEX IF NOT EXISTS spans_user ON spans (user_id, start_time) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_session ON spans (session_id, start_time) WHERE session_id IS NOT NULL;
