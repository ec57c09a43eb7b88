//! No secret is stored, logged, exported or exposed: the shipped binary at
//! debug log level with body capture on receives API keys in every place
//! they travel (auth headers, query strings, request bodies, upstream
//! responses and errors that echo them, streams) through OpenAI, Anthropic,
//! Azure-style and Gemini-style routes; then the database file (with its
//! WAL, before and after a checkpoint), the log, the query API, the export
//! and `/metrics` are searched for every key: 0 hits.

mod mock;
mod procs;

use std::time::{Duration, Instant};

use procs::*;

/// Keys, each used in one place so that a hit names the leak.
const K_BEARER: &str = "sk-proj-LeakBearer0123456789abcdefABCDEF";
const K_ANTHROPIC: &str = "sk-ant-api03-LeakAnthropic0123456789abcdef";
/// Azure keys are 32 hex digits: no pattern can tell them from an id.
const K_AZURE: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const K_GEMINI: &str = "AIzaSyLeakGemini0123456789abcdefghijk";
const K_QUERY: &str = "sk-LeakQueryApiKey0123456789";
const K_MESSAGE: &str = "sk-LeakInMessageText0123456789";
/// Not key-shaped: found only as the value of a credential field.
const K_FIELD: &str = "LeakJsonField-9f8e7d6c5b4a";
const K_PROPERTY: &str = "sk-LeakProperty0123456789abc";

const ALL: &[&str] = &[
    K_BEARER,
    K_ANTHROPIC,
    K_AZURE,
    K_GEMINI,
    K_QUERY,
    K_MESSAGE,
    K_FIELD,
    K_PROPERTY,
];

fn chat(stream: bool) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": format!("my key is {K_MESSAGE}, keep it safe")}
        ],
        "metadata": {"api_key": K_FIELD},
    })
    .to_string()
}

fn messages(stream: bool) -> String {
    serde_json::json!({
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": format!("here: {K_MESSAGE}")}],
        "metadata": {"user_id": "u1", "api_key": K_FIELD},
    })
    .to_string()
}

/// Path, headers, body, expected status.
type Case<'a> = (String, Vec<(&'a str, &'a str)>, String, u16);

/// Every place a key is found in `haystack`.
fn hits(haystack: &[u8]) -> Vec<&'static str> {
    ALL.iter()
        .copied()
        .filter(|k| memchr::memmem::find(haystack, k.as_bytes()).is_some())
        .collect()
}

fn read_or_empty(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_never_reach_the_store_logs_api_or_metrics() {
    let mock = mock::MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.db");
    let cfg = config(&mock.url(), &db, "", "drain_timeout_ms = 5000");
    let mut tap = Llmtap::start(
        dir.path(),
        &cfg,
        &[("RUST_LOG", "debug"), ("TRACE_DEBUG", "true")],
    );
    let c = client();
    let bearer = format!("Bearer {K_BEARER}");
    let oa = [("authorization", bearer.as_str())];
    let an = [
        ("x-api-key", K_ANTHROPIC),
        ("anthropic-version", "2023-06-01"),
    ];
    let az = [("api-key", K_AZURE)];
    let echo = ("x-mock-scenario", "echo-auth");
    let echo401 = ("x-mock-scenario", "error:401,echo-auth");
    let prop = ("x-llmtap-property-note", K_PROPERTY);

    let azure_path = "/azure/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01";
    let gemini_path = format!("/gemini/chat/completions?key={K_GEMINI}");
    let query_path = format!("/v1/chat/completions?api-version=1&api-key={K_QUERY}");
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("/v1/chat/completions".into(), vec![oa[0], echo, prop], chat(false), 200),
        ("/v1/chat/completions".into(), vec![oa[0], echo], chat(true), 200),
        ("/v1/chat/completions".into(), vec![oa[0], echo401], chat(false), 401),
        ("/v1/chat/completions".into(), vec![oa[0], echo401], chat(true), 401),
        ("/anthropic/v1/messages".into(), vec![an[0], an[1], echo], messages(false), 200),
        ("/anthropic/v1/messages".into(), vec![an[0], an[1], echo], messages(true), 200),
        ("/anthropic/v1/messages".into(), vec![an[0], an[1], echo401], messages(false), 401),
        (azure_path.into(), vec![az[0], echo], chat(false), 200),
        (azure_path.into(), vec![az[0], echo], chat(true), 200),
        (azure_path.into(), vec![az[0], echo401], chat(false), 401),
        (gemini_path.clone(), vec![echo], chat(false), 200),
        (gemini_path.clone(), vec![echo], chat(true), 200),
        (gemini_path.clone(), vec![echo401], chat(false), 401),
        (query_path.clone(), vec![echo401], chat(false), 401),
    ];
    let mut client_saw = Vec::new();
    for (path, headers, body, want) in &cases {
        let got = post_json(&c, &tap.url(path), headers, body).await;
        assert_eq!(got.status.as_u16(), *want, "{path}: {:?}", got.body);
        client_saw.extend_from_slice(&got.body);
    }
    // The keys really travelled: the upstream got them, and echoed them to
    // the client (bytes are never altered).
    {
        let reqs = mock.state.requests.lock().unwrap();
        let mut upstream_saw = Vec::new();
        for r in reqs.iter() {
            upstream_saw.extend_from_slice(r.uri.to_string().as_bytes());
            for v in r.headers.values() {
                upstream_saw.extend_from_slice(v.as_bytes());
            }
            upstream_saw.extend_from_slice(&r.body);
        }
        let mut want: Vec<&str> = ALL.iter().copied().filter(|k| *k != K_PROPERTY).collect();
        want.sort();
        let mut seen = hits(&upstream_saw);
        seen.sort();
        assert_eq!(seen, want, "the upstream did not receive every key");
    }
    let mut echoed = hits(&client_saw);
    echoed.sort();
    let mut want_echoed = vec![K_BEARER, K_ANTHROPIC, K_AZURE, K_GEMINI, K_QUERY];
    want_echoed.sort();
    assert_eq!(
        echoed, want_echoed,
        "the upstream's echoes reached the client"
    );

    // Every exchange written.
    let n = cases.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(20);
    while count_spans(&db).await < n {
        assert!(Instant::now() < deadline, "spans not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The query API, the export and the metrics.
    let mut api = Vec::new();
    let traces = get(&c, &tap.admin_url("/api/traces?limit=500"), &[]).await;
    assert_eq!(traces.status, 200);
    api.extend_from_slice(&traces.body);
    for q in [
        "/api/export?format=ndjson&bodies=true",
        "/api/export?format=json",
        "/metrics",
    ] {
        let got = get(&c, &tap.admin_url(q), &[]).await;
        assert_eq!(got.status, 200, "{q}");
        api.extend_from_slice(&got.body);
    }
    let export = get(
        &c,
        &tap.admin_url("/api/export?format=ndjson&bodies=true"),
        &[],
    )
    .await;
    let spans: Vec<serde_json::Value> = export
        .body
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(spans.len(), cases.len());
    for s in &spans {
        let id = s["span_id"].as_str().unwrap();
        let one = get(&c, &tap.admin_url(&format!("/api/spans/{id}")), &[]).await;
        assert_eq!(one.status, 200);
        api.extend_from_slice(&one.body);
        let trace = s["trace_id"].as_str().unwrap();
        let t = get(
            &c,
            &tap.admin_url(&format!("/api/traces/{trace}?bodies=true")),
            &[],
        )
        .await;
        api.extend_from_slice(&t.body);
    }
    assert_eq!(hits(&api), Vec::<&str>::new(), "keys in the API answers");
    // Redaction left its mark where the keys were (a positive control).
    let text = String::from_utf8_lossy(&api).into_owned();
    assert!(
        text.contains("Incorrect API key provided: [REDACTED]"),
        "{text}"
    );
    assert!(text.contains("my key is [REDACTED]"), "{text}");
    assert!(text.contains("echo-[REDACTED]"), "{text}");

    // The database file and its WAL while llmtap runs...
    let wal = dir.path().join("spans.db-wal");
    let mut files = read_or_empty(&db);
    files.extend(read_or_empty(&wal));
    files.extend(read_or_empty(&dir.path().join("spans.db-shm")));
    assert!(!files.is_empty());
    assert_eq!(hits(&files), Vec::<&str>::new(), "keys in the db/WAL");

    // ...then stopped, and after a checkpoint.
    tap.signal("TERM");
    assert!(tap.wait_exit(Duration::from_secs(30)).success());
    {
        let mut conn = sqlite(&db).await;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        let n_after: i64 = sqlx::query_scalar("SELECT count(*) FROM spans")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n_after, n);
    }
    let mut files = read_or_empty(&db);
    files.extend(read_or_empty(&wal));
    assert_eq!(
        hits(&files),
        Vec::<&str>::new(),
        "keys in the db after checkpoint"
    );

    // The debug log.
    let log = std::fs::read(&tap.log).unwrap();
    let log_text = String::from_utf8_lossy(&log);
    assert!(log_text.contains("DEBUG"), "not a debug log: {log_text}");
    assert_eq!(hits(&log), Vec::<&str>::new(), "keys in the log");
}

#[tokio::test]
async fn a_bad_redact_pattern_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[tracing]\nredact_patterns = ['sk-[a-z]+', '(unclosed']\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmtap"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tracing.redact_patterns[1]"), "{err}");
}
