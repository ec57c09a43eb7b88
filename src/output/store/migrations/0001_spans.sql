-- The span record: one row per span. Times are microseconds since the Unix
-- epoch. Written by the same statements on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS spans (
    trace_id            TEXT    NOT NULL,
    span_id             TEXT    NOT NULL PRIMARY KEY,
    parent_span_id      TEXT,
    name                TEXT    NOT NULL,
    operation_type      TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    route               TEXT    NOT NULL,
    method              TEXT    NOT NULL,
    path                TEXT    NOT NULL,
    model               TEXT,
    response_model      TEXT,
    stream              BOOLEAN NOT NULL,
    http_status         INTEGER,
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
