//! Benchmark data and timings for the query API.
//!
//! Fills a SQLite store with synthetic spans through the real writer
//! (`Store::write_spans`, so the rollups are exactly what the batcher
//! writes), then starts llmtap on it (loopback, ephemeral ports) and times
//! `/api/stats` and `/api/traces` through a real HTTP client.
//!
//! ```text
//! cargo run --release --example gen_spans -- [--spans N] [--days D]
//!     [--db PATH] [--batch B] [--measure-only] [--no-measure] [--runs R]
//! ```
//!
//! Defaults: 10,000,000 spans over the last 30 days into
//! `target/bench/spans.db`, written 20,000 per transaction (500 rows per
//! INSERT); 7 timed runs of each query. The data: traces of one chat call
//! (70%), an agent loop (LLM call, tool call, LLM call: 20%), a three-turn
//! chat (5%) or one embedding (5%); six models on three providers (one
//! unpriced), about half streamed (with a time to first token), 3% failed
//! and 1% cancelled, log-normal durations around 800 ms, sessions, users
//! and a `team` property on some, short bodies. Deterministic: the same
//! arguments give the same rows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmtap::output::store::{Store, StoreUrl};
use llmtap::record::span::{Span, SpanStatus};

struct Args {
    spans: u64,
    days: u64,
    db: PathBuf,
    batch: usize,
    generate: bool,
    measure: bool,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        spans: 10_000_000,
        days: 30,
        db: PathBuf::from("target/bench/spans.db"),
        batch: 20_000,
        generate: true,
        measure: true,
        runs: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--spans" => a.spans = value().parse().expect("--spans N"),
            "--days" => a.days = value().parse().expect("--days D"),
            "--db" => a.db = PathBuf::from(value()),
            "--batch" => a.batch = value().parse().expect("--batch B"),
            "--runs" => a.runs = value().parse().expect("--runs R"),
            "--measure-only" => a.generate = false,
            "--no-measure" => a.measure = false,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// splitmix64: a bijection, so distinct counters give distinct ids.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// exp(N(mu, sigma)).
    fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let n = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (sigma * n).exp()
    }
}

/// (model, provider, route, (input, output) $ per million tokens, weight).
type Model = (
    &'static str,
    &'static str,
    &'static str,
    Option<(f64, f64)>,
    u64,
);
const MODELS: &[Model] = &[
    ("gpt-4o-mini", "openai", "/v1", Some((0.15, 0.6)), 40),
    ("gpt-4o", "openai", "/v1", Some((2.5, 10.0)), 20),
    (
        "claude-sonnet-4",
        "anthropic",
        "/anthropic",
        Some((3.0, 15.0)),
        15,
    ),
    (
        "claude-3-5-haiku",
        "anthropic",
        "/anthropic",
        Some((0.8, 4.0)),
        10,
    ),
    ("llama-3.1-70b", "groq", "/groq", None, 15),
];

struct Gen {
    rng: Rng,
    trace_no: u64,
    span_no: u64,
}

impl Gen {
    fn span(&mut self, trace_id: &str, start: i64) -> Span {
        self.span_no += 1;
        let mut s = Span::start(start);
        s.trace_id = trace_id.to_string();
        s.span_id = format!("{:016x}", mix(self.span_no ^ 0x5eed));
        s.method = "POST".into();
        s.status = SpanStatus::Completed;
        s
    }

    fn llm(&mut self, s: &mut Span, m: usize) {
        let (model, provider, route, price, _) = MODELS[m];
        let r = &mut self.rng;
        s.name = format!("chat {model}");
        s.operation_type = "llm_call".into();
        s.provider = provider.into();
        s.route = route.into();
        s.path = if provider == "anthropic" {
            "/anthropic/v1/messages".into()
        } else {
            format!("{route}/chat/completions")
        };
        s.model = Some(model.into());
        s.response_model = Some(format!("{model}-2025-01-01"));
        s.stream = r.below(2) == 0;
        s.duration_ms = r.lognormal(800.0, 0.8).min(600_000.0);
        if s.stream {
            s.ttft_ms = Some(s.duration_ms * (0.05 + 0.25 * r.unit()));
        }
        let roll = r.below(100);
        s.http_status = Some(200);
        if roll < 3 {
            s.status = SpanStatus::Failed;
            s.http_status = Some(429);
            s.error_type = Some("rate_limit_error".into());
            s.error_message = Some("Rate limit reached for requests".into());
            s.duration_ms = r.lognormal(60.0, 0.5);
            s.ttft_ms = None;
        } else if roll < 4 {
            s.status = SpanStatus::Cancelled;
            s.http_status = None;
            s.error_type = Some("client_disconnected".into());
        }
        if s.status != SpanStatus::Failed {
            let input = 50 + r.below(4000) as i64;
            let output = 10 + r.below(1000) as i64;
            s.input_tokens = Some(input);
            s.output_tokens = Some(output);
            s.cached_input_tokens = Some(if r.below(4) == 0 { input / 2 } else { 0 });
            s.tokens_estimated = s.stream && r.below(10) == 0;
            s.cost_usd = price.map(|(i, o)| (input as f64 * i + output as f64 * o) / 1e6);
            s.finish_reason = Some("stop".into());
            s.response_id = Some(format!("chatcmpl-{:012x}", mix(self.span_no) >> 16));
        }
        s.request_body = Some(format!(
            r#"{{"model":"{model}","messages":[{{"role":"user","content":"Question number {} about the weather"}}]}}"#,
            self.span_no
        ));
        if s.status == SpanStatus::Completed {
            s.response_body = Some(format!(
                r#"{{"id":"chatcmpl","choices":[{{"message":{{"role":"assistant","content":"Answer {} with some words in it."}}}}]}}"#,
                self.span_no
            ));
        }
    }

    /// One trace starting at `start` (µs).
    fn trace(&mut self, start: i64, out: &mut Vec<Span>) {
        self.trace_no += 1;
        let trace_id = format!(
            "{:016x}{:016x}",
            mix(self.trace_no),
            mix(self.trace_no ^ 0xabcdef)
        );
        let kind = self.rng.below(100);
        let pick = self.rng.below(100);
        let mut acc = 0;
        let m = MODELS
            .iter()
            .position(|x| {
                acc += x.4;
                pick < acc
            })
            .unwrap_or(0);
        let session = (self.rng.below(10) < 3).then(|| format!("session-{}", self.rng.below(5000)));
        let user = (self.rng.below(2) == 0).then(|| format!("user-{}", self.rng.below(2000)));
        let team = match self.rng.below(10) {
            0 => Some(r#"{"team":"search"}"#),
            1 => Some(r#"{"team":"support"}"#),
            _ => None,
        };
        let first = out.len();
        if kind < 5 {
            let mut s = self.span(&trace_id, start);
            s.name = "embeddings text-embedding-3-small".into();
            s.operation_type = "embedding".into();
            s.provider = "openai".into();
            s.route = "/v1".into();
            s.path = "/v1/embeddings".into();
            s.model = Some("text-embedding-3-small".into());
            s.duration_ms = self.rng.lognormal(120.0, 0.4);
            s.http_status = Some(200);
            let n = 5 + self.rng.below(500) as i64;
            s.input_tokens = Some(n);
            s.output_tokens = Some(0);
            s.cost_usd = Some(n as f64 * 0.02 / 1e6);
            out.push(s);
        } else {
            let turns = match kind {
                5..=9 => 3,
                10..=29 => 2,
                _ => 1,
            };
            let agent = (10..30).contains(&kind);
            let mut t = start;
            let mut root: Option<String> = None;
            for turn in 0..turns {
                let mut s = self.span(&trace_id, t);
                self.llm(&mut s, m);
                s.parent_span_id = root.clone();
                s.conversation_id = Some(trace_id.clone());
                s.end_time_us = t + (s.duration_ms * 1000.0) as i64;
                t = s.end_time_us;
                let id = s.span_id.clone();
                root.get_or_insert(id.clone());
                let failed = s.status != SpanStatus::Completed;
                out.push(s);
                if failed {
                    break;
                }
                if agent && turn == 0 {
                    let mut tool = self.span(&trace_id, t);
                    tool.name = "execute_tool get_weather".into();
                    tool.operation_type = "tool_call".into();
                    tool.provider = MODELS[m].1.into();
                    tool.route = MODELS[m].2.into();
                    tool.parent_span_id = Some(id);
                    tool.conversation_id = Some(trace_id.clone());
                    tool.duration_ms = self.rng.lognormal(300.0, 1.0);
                    tool.end_time_us = t + (tool.duration_ms * 1000.0) as i64;
                    tool.properties = Some(format!(
                        r#"{{"gen_ai.tool.call.id":"call_{}","gen_ai.tool.name":"get_weather"}}"#,
                        self.span_no
                    ));
                    tool.request_body = Some(r#"{"city":"Paris"}"#.into());
                    tool.response_body = Some("18 C and sunny".into());
                    t = tool.end_time_us;
                    out.push(tool);
                }
                t += (self.rng.lognormal(2000.0, 1.0) * 1000.0) as i64;
            }
        }
        for s in &mut out[first..] {
            if s.end_time_us == s.start_time_us {
                s.end_time_us = s.start_time_us + (s.duration_ms * 1000.0) as i64;
            }
            s.session_id.clone_from(&session);
            s.user_id.clone_from(&user);
            if s.properties.is_none() {
                s.properties = team.map(str::to_string);
            }
            s.api_key_hash = Some("0123456789abcdef".into());
        }
    }
}

async fn generate(a: &Args, store: &Store) {
    let now = llmtap::record::span::now_us();
    let span_us = a.days as i64 * 86_400_000_000;
    let t0 = now - span_us;
    // The mix below averages 1.478 spans per trace (measured: 10,000,000
    // spans made 6,766,143 traces): spread that many traces' starts evenly,
    // so the newest trace starts about now. (A rounder 1.5 planned too few
    // traces; the surplus piled up at one instant before now, ~33,000 trace
    // heads under ~66,000 later spans, which no real store looks like.)
    let traces = (a.spans as f64 / 1.478).max(1.0);
    let step = span_us as f64 / traces;
    let mut g = Gen {
        rng: Rng(42),
        trace_no: 0,
        span_no: 0,
    };
    let started = Instant::now();
    let mut written: u64 = 0;
    let mut batch = Vec::with_capacity(a.batch + 8);
    let mut last_report = Instant::now();
    while written < a.spans {
        let start = t0 + (g.trace_no as f64 * step) as i64 + g.rng.below(1_000_000) as i64;
        // Past the planned span (a mix that ran long): spread over the last
        // minute rather than stacked on one instant.
        let start = if start > now - 60_000_000 {
            now - 60_000_000 - g.rng.below(60_000_000) as i64
        } else {
            start
        };
        g.trace(start, &mut batch);
        if batch.len() >= a.batch || written + batch.len() as u64 >= a.spans {
            let keep = (a.spans - written).min(batch.len() as u64) as usize;
            batch.truncate(keep);
            store.write_spans(&batch).await.expect("write_spans");
            written += batch.len() as u64;
            batch.clear();
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "{written} spans in {secs:.0} s ({:.0} spans/s)",
                    written as f64 / secs
                );
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "generated {written} spans ({} traces) over {} days in {secs:.1} s: {:.0} spans/s through Store::write_spans (rollups included)",
        g.trace_no,
        a.days,
        written as f64 / secs
    );
}

async fn measure(a: &Args) {
    let mut config = llmtap::config::Config {
        database_url: format!("sqlite://{}", a.db.display()),
        ..llmtap::config::Config::default()
    };
    config.stitching.enabled = false;
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr: SocketAddr = admin.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opened = Instant::now();
    let task = tokio::spawn(llmtap::run(
        llmtap::Listeners {
            proxy,
            admin: Some(admin),
        },
        async move {
            let _ = stopped.await;
        },
        config,
    ));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let get = |path: String| {
        let client = client.clone();
        async move {
            let uri: http::Uri = format!("http://{admin_addr}{path}").parse().unwrap();
            let t = Instant::now();
            let resp = client.get(uri).await.expect("request");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (t.elapsed(), status, body)
        }
    };
    // Wait for the admin listener (the store opens first).
    loop {
        let uri: http::Uri = format!("http://{admin_addr}/healthz").parse().unwrap();
        if client.get(uri).await.is_ok() {
            break;
        }
        assert!(
            opened.elapsed() < Duration::from_secs(600),
            "llmtap did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "store opened, admin ready in {:.2} s",
        opened.elapsed().as_secs_f64()
    );
    // Ranges end at the newest trace (a run stopped early ends before now).
    let (_, _, body) = get("/api/traces?limit=1".into()).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let now = v["traces"][0]["start_time_us"]
        .as_i64()
        .unwrap_or_else(llmtap::record::span::now_us)
        + 1;
    let day = 86_400_000_000i64;
    // A cursor 10 pages deep.
    let mut cursor = String::new();
    for _ in 0..10 {
        let (_, _, body) = get(format!("/api/traces?limit=50{cursor}")).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        cursor = format!("&cursor={}", v["next_cursor"].as_str().unwrap_or(""));
    }
    let queries: Vec<(String, String)> = vec![
        (
            "stats, last 24 h, 5m buckets".into(),
            format!("/api/stats?from={}&to={now}&bucket=5m", now - day),
        ),
        (
            "stats, last 24 h, 60s buckets".into(),
            format!("/api/stats?from={}&to={now}&bucket=60s", now - day),
        ),
        (
            "stats, last 7 d, 5m buckets".into(),
            format!("/api/stats?from={}&to={now}&bucket=5m", now - 7 * day),
        ),
        (
            "stats, last 7 d, 1h buckets".into(),
            format!("/api/stats?from={}&to={now}&bucket=1h", now - 7 * day),
        ),
        (
            "stats, last 30 d, 1h buckets".into(),
            format!("/api/stats?from={}&to={now}&bucket=1h", now - 30 * day),
        ),
        (
            "stats, last 30 d, 1d buckets".into(),
            format!("/api/stats?from={}&to={now}&bucket=1d", now - 30 * day),
        ),
        ("traces, first page (50)".into(), "/api/traces".into()),
        (
            "traces, page 11 (cursor)".into(),
            format!("/api/traces?limit=50{cursor}"),
        ),
        ("traces, limit=500".into(), "/api/traces?limit=500".into()),
        (
            "traces, status=failed".into(),
            "/api/traces?status=failed".into(),
        ),
        (
            "traces, model=gpt-4o".into(),
            "/api/traces?model=gpt-4o".into(),
        ),
        (
            "traces, operation_type=tool_call&min_duration_ms=2000".into(),
            "/api/traces?operation_type=tool_call&min_duration_ms=2000".into(),
        ),
        (
            "traces, property=team:search".into(),
            "/api/traces?property=team:search".into(),
        ),
        (
            "traces, one hour 10 days ago".into(),
            format!(
                "/api/traces?from={}&to={}",
                now - 10 * day,
                now - 10 * day + 3_600_000_000
            ),
        ),
        (
            "traces, user_id=user-42 (rare, no index)".into(),
            "/api/traces?user_id=user-42".into(),
        ),
        (
            "traces, q=chatcmpl-0000 (LIKE scan)".into(),
            "/api/traces?q=chatcmpl-0000".into(),
        ),
    ];
    println!("\n| query | first (ms) | median (ms) | max (ms) | rows |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (label, path) in queries {
        let mut times = Vec::new();
        let mut rows = 0;
        let mut first = 0.0;
        for i in 0..a.runs.max(1) + 1 {
            let (t, status, body) = get(path.clone()).await;
            assert!(
                status.is_success(),
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            let ms = t.as_secs_f64() * 1000.0;
            if i == 0 {
                first = ms;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                rows = v["traces"]
                    .as_array()
                    .map(Vec::len)
                    .unwrap_or_else(|| v["totals"]["requests"].as_i64().unwrap_or(0) as usize);
            } else {
                times.push(ms);
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "| {label} | {first:.1} | {:.1} | {:.1} | {rows} |",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    let _ = stop.send(());
    let _ = task.await;
}

#[tokio::main]
async fn main() {
    let a = args();
    if a.generate {
        if let Some(dir) = a.db.parent() {
            std::fs::create_dir_all(dir).expect("create the db directory");
        }
        let url = StoreUrl::Sqlite(a.db.clone());
        let store = Store::open(&url).await.expect("open the store");
        generate(&a, &store).await;
        store.close().await;
    }
    if a.measure {
        measure(&a).await;
    }
    if let Ok(meta) = std::fs::metadata(&a.db) {
        println!(
            "\ndatabase: {} ({:.2} GB)",
            a.db.display(),
            meta.len() as f64 / 1e9
        );
    }
}
