-- Span identity is (trace_id, span_id), as in W3C Trace Context, where a
-- span id is unique within its trace. llmtap's ids lead with their creation
-- time (span.rs), so this key and the span id index take their inserts at
-- the right edge instead of at random pages: with random keys every row of
-- a batch dirtied its own page in each such index, and the writer's cost
-- per span doubled as the file grew. SQLite cannot change a primary key in
-- place: the table is rebuilt, rowids kept (the rollups' high-water mark
-- counts rowids).
CREATE TABLE spans_new (
    trace_id            TEXT    NOT NULL,
    span_id             TEXT    NOT NULL,
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
INSERT INTO spans_new (rowid, trace_id, span_id, parent_span_id, name, operation_type, provider, route, method, path, model, response_model, stream, http_status, status, error_type, error_message, start_time, end_time, duration_ms, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, tokens_estimated, cost_usd, finish_reason, response_id, conversation_id, session_id, user_id, api_key_hash, properties, request_body, response_body)
    SELECT rowid, trace_id, span_id, parent_span_id, name, operation_type, provider, route, method, path, model, response_model, stream, http_status, status, error_type, error_message, start_time, end_time, duration_ms, ttft_ms, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens, tokens_estimated, cost_usd, finish_reason, response_id, conversation_id, session_id, user_id, api_key_hash, properties, request_body, response_body FROM spans;
DROP TABLE spans;
ALTER TABLE spans_new RENAME TO spans;
CREATE UNIQUE INDEX spans_trace ON spans (trace_id, span_id);
CREATE INDEX spans_span ON spans (span_id);
CREATE INDEX spans_start_time ON spans (start_time);
CREATE INDEX spans_status ON spans (status, start_time);
CREATE INDEX spans_model ON spans (model, start_time);
CREATE INDEX spans_conversation ON spans (conversation_id, start_time);
