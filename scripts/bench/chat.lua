-- wrk script for scripts/bench.sh: POSTs a non-streamed OpenAI chat completion
-- and, when the run ends, prints one machine-readable line:
--   WRKJSON {"requests":..,"duration_us":..,"p50_us":..,...}
-- Environment: BENCH_WORDS (x-mock-words, default 8).
-- No response() callback is defined on purpose: defining one makes wrk parse
-- every response in Lua, which would slow the load generator. HTTP status
-- errors (>= 400) are still counted by wrk in summary.errors.status.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000"
wrk.headers["x-mock-words"] = os.getenv("BENCH_WORDS") or "8"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say eight words."}]}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
