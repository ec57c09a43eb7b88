-- PostgreSQL: the same logical schema as ../0001_spans.sql (SQLite),
-- column for column and index for index. Types: BIGINT, DOUBLE PRECISION,
-- TEXT, BOOLEAN; times are BIGINT microseconds since the Unix epoch, as on
-- SQLite, so a Span round-trips identically. Ids compare bytewise
-- (COLLATE "C"), as SQLite compares them, so keyset cursors agree.
CREATE TABLE IF NOT EXISTS spans (
    trace_id            TEXT    COLLATE "C" NOT NULL,
    span_id             TEXT    COLLATE "C" NOT NULL PRIMARY KEY,
    parent_span_id      TEXT    COLLATE "C",
    name                TEXT    NOT NULL,
    operation_type      TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    route               TEXT    NOT NULL,
    method              TEXT    NOT NULL,
    path                TEXT    NOT NULL,
    model               TEXT,
    response_model      TEXT,
    stream              BOOLEAN NOT NULL,
    http_status         BIGINT,
    status              TEXT    NOT NULL,
    error_type          TEXT,
    error_message       TEXT,
    start_time          BIGINT  NOT NULL,
    end_time            BIGINT  NOT NULL,
    duration_ms         DOUBLE PRECISION NOT NULL,
    ttft_ms             DOUBLE PRECISION,
    input_tokens        BIGINT,
    output_tokens       BIGINT,
    cached_input_tokens BIGINT,
    cache_write_tokens  BIGINT,
    reasoning_tokens    BIGINT,
    tokens_estimated    BOOLEAN NOT NULL,
    cost_usd            DOUBLE PRECISION,
    finish_reason       TEXT,
    response_id         TEXT,
    conversation_id     TEXT,
    session_id          TEXT,
    user_id             TEXT,
    api_key_hash        TEXT,
    properties          TEXT,
    request_body        TEXT,
    response_body       TEXT
);
CREATE INDEX IF NOT EXISTS spans_start_time ON spans (start_time);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id, start_time);
CREATE INDEX IF NOT EXISTS spans_status ON spans (status, start_time);
CREATE INDEX IF NOT EXISTS spans_model ON spans (model, start_time);
CREATE INDEX IF NOT EXISTS spans_conversation ON spans (conversation_id, start_time);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);

-- The string value of a top-level key of a JSON text, or NULL (for a
-- missing key, a non-string value, or text that is not JSON): the
-- `property=KEY:VALUE` filter, matching SQLite's json_valid/json_extract.
CREATE OR REPLACE FUNCTION llmtap_json_text(doc TEXT, k TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    j JSONB;
BEGIN
    IF doc IS NULL THEN
        RETURN NULL;
    END IF;
    BEGIN
        j := doc::jsonb;
    EXCEPTION WHEN others THEN
        RETURN NULL;
    END;
    IF jsonb_typeof(j) = 'object' AND jsonb_typeof(j -> k) = 'string' THEN
        RETURN j ->> k;
    END IF;
    RETURN NULL;
END;
$$;
