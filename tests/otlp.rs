//! OTLP export end to end: a real llmtap `run` against the mock provider,
//! exporting to an in-test OTLP/HTTP receiver (a hyper server on loopback
//! that records every request and answers from a script). The attribute
//! mapping is checked against the official protobuf decoder in
//! `tests/sdk/test_otlp.py`; here: delivery, headers, gzip, retries,
//! `store = "none"`, shutdown flush, a down collector, and sampling.

mod common;
mod mock;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use llmtap::config::{Compression, StoreKind};
use tokio::net::TcpListener;

const SECRET: &str = "sk-test-SECRET-key-0123456789";

/// One request the receiver got.
#[derive(Clone)]
struct Got_ {
    at: Instant,
    headers: HeaderMap,
    /// The body as sent (maybe gzip).
    raw: Bytes,
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Got_>,
    /// Answers to give, in order (status, Retry-After); then 200.
    script: VecDeque<(u16, Option<&'static str>)>,
}

struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start(script: &[(u16, Option<&'static str>)]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState {
            got: Vec::new(),
            script: script.iter().copied().collect(),
        }));
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((io, _)) = listener.accept().await else {
                    return;
                };
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                        let st = Arc::clone(&st);
                        async move {
                            let (parts, body) = req.into_parts();
                            let raw = body.collect().await.unwrap().to_bytes();
                            let mut s = st.lock().unwrap();
                            let (status, retry_after) = s.script.pop_front().unwrap_or((200, None));
                            s.got.push(Got_ {
                                at: Instant::now(),
                                headers: parts.headers,
                                raw,
                                status,
                            });
                            let mut resp = Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            if let Some(ra) = retry_after {
                                resp.headers_mut()
                                    .insert("retry-after", ra.parse().unwrap());
                            }
                            resp.headers_mut()
                                .insert("content-type", "application/x-protobuf".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                        .await;
                });
            }
        });
        Receiver { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn got(&self) -> Vec<Got_> {
        self.state.lock().unwrap().got.clone()
    }

    /// Spans in accepted (2xx) requests.
    fn accepted_spans(&self) -> Vec<DecodedSpan> {
        self.got()
            .iter()
            .filter(|g| g.status == 200)
            .flat_map(|g| decode_request(&body_of(g)))
            .collect()
    }

    /// Waits (bounded) for at least `n` accepted spans.
    async fn wait_spans(&self, n: usize, within: Duration) -> Vec<DecodedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.accepted_spans();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} spans, expected {n}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn body_of(g: &Got_) -> Vec<u8> {
    if g.headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&g.raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        g.raw.to_vec()
    }
}

// === a minimal protobuf reader (the official decoder runs in tests/sdk) ===

fn fields(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b);
        let payload = match tag & 7 {
            0 => varint(&mut b).to_le_bytes().to_vec(),
            1 => {
                let p = b[..8].to_vec();
                b = &b[8..];
                p
            }
            5 => {
                let p = b[..4].to_vec();
                b = &b[4..];
                p
            }
            2 => {
                let n = varint(&mut b) as usize;
                let p = b[..n].to_vec();
                b = &b[n..];
                p
            }
            w => panic!("wire type {w}"),
        };
        out.push(((tag >> 3) as u32, payload));
    }
    out
}

fn sub(b: &[u8], field: u32) -> Vec<Vec<u8>> {
    fields(b)
        .into_iter()
        .filter(|f| f.0 == field)
        .map(|f| f.1)
        .collect()
}

#[derive(Debug, Clone)]
struct DecodedSpan {
    trace_id: String,
    span_id: String,
    name: String,
    /// String-valued attributes.
    attrs: HashMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_request(body: &[u8]) -> Vec<DecodedSpan> {
    let mut out = Vec::new();
    for rs in sub(body, 1) {
        for ss in sub(&rs, 2) {
            for span in sub(&ss, 2) {
                let mut attrs = HashMap::new();
                for kv in sub(&span, 9) {
                    let key = String::from_utf8(sub(&kv, 1)[0].clone()).unwrap();
                    if let Some(s) = sub(&sub(&kv, 2)[0], 1).first() {
                        attrs.insert(key, String::from_utf8_lossy(s).into_owned());
                    }
                }
                out.push(DecodedSpan {
                    trace_id: hex(&sub(&span, 1)[0]),
                    span_id: hex(&sub(&span, 2)[0]),
                    name: String::from_utf8(sub(&span, 5)[0].clone()).unwrap(),
                    attrs,
                });
            }
        }
    }
    out
}

async fn metrics(h: &Harness) -> String {
    let got = send(
        &client(),
        request(Method::GET, &format!("http://{}/metrics", h.admin), &[], ""),
    )
    .await;
    String::from_utf8(got.body.to_vec()).unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {SECRET}"))
}

#[tokio::test]
async fn spans_reach_the_collector_with_headers_gzip_and_a_retry_after() {
    // First answer: 503 with Retry-After: 1; then 200.
    let rx = Receiver::start(&[(503, Some("1"))]).await;
    let endpoint = rx.url();
    let mut h = Harness::start_with(|c| {
        c.otlp.endpoint = endpoint;
        c.otlp.compression = Compression::Gzip;
        c.otlp.batch_interval_ms = 20;
        c.otlp.headers.insert("x-team".into(), "ml-platform".into());
        c.otlp.service_name = "checkout".into();
    })
    .await;
    let c = client();
    let (k, v) = auth();
    for stream in [false, true, false] {
        let got = post(
            &c,
            &h.url("/v1/chat/completions"),
            &[(k, &v)],
            &chat_body(stream, true),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let stored = h.spans(3).await;
    let spans = rx.wait_spans(3, Duration::from_secs(15)).await;
    let got = rx.got();
    assert_eq!(got[0].status, 503);
    let retry = got.iter().find(|g| g.status == 200).unwrap();
    let waited = retry.at - got[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {waited:?}"
    );
    for g in &got {
        assert_eq!(g.headers["content-type"], "application/x-protobuf");
        assert_eq!(g.headers["content-encoding"], "gzip");
        assert_eq!(g.headers["x-team"], "ml-platform");
        assert!(g.headers.get("authorization").is_none());
        let body = body_of(g);
        assert!(!body.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
        assert!(!g.raw.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    }
    // The same ids as the stored records, once each.
    let exported: HashSet<(String, String)> = spans
        .iter()
        .map(|s| (s.trace_id.clone(), s.span_id.clone()))
        .collect();
    let stored_ids: HashSet<(String, String)> = stored
        .iter()
        .map(|s| {
            (
                s["trace_id"].as_str().unwrap().to_string(),
                s["span_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(exported, stored_ids);
    assert_eq!(spans.len(), 3, "no span exported twice");
    for s in &spans {
        assert_eq!(s.name, "chat gpt-4o-mini");
        assert_eq!(s.attrs["gen_ai.provider.name"], "openai");
        assert_eq!(s.attrs["server.address"], "127.0.0.1");
    }
    // The resource names the service.
    let body = body_of(retry);
    let resource = &sub(&sub(&body, 1)[0], 1)[0];
    let names: Vec<String> = sub(resource, 1)
        .iter()
        .map(|kv| String::from_utf8_lossy(&sub(&sub(kv, 2)[0], 1)[0]).into_owned())
        .collect();
    assert!(names.contains(&"checkout".to_string()), "{names:?}");
    let m = metrics(&h).await;
    assert_eq!(metric(&m, "llmtap_otlp_spans_exported_total"), 3.0);
    assert!(metric(&m, "llmtap_otlp_request_errors_total") >= 1.0);
    assert_eq!(metric(&m, "llmtap_otlp_spans_failed_total"), 0.0);
    h.stop().await;
}

#[tokio::test]
async fn store_none_exports_only_flushes_at_shutdown_and_the_api_says_why() {
    let rx = Receiver::start(&[]).await;
    let endpoint = rx.url();
    let mut h = Harness::start_with(|c| {
        c.store = StoreKind::None;
        c.otlp.endpoint = endpoint;
        // Nothing is sent before shutdown: the flush at exit must send it.
        c.otlp.batch_interval_ms = 600_000;
        c.otlp.batch_size = 1000;
    })
    .await;
    let c = client();
    let got = post(
        &c,
        &h.url("/v1/chat/completions"),
        &[],
        &chat_body(false, false),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let api = send(
        &c,
        request(
            Method::GET,
            &format!("http://{}/api/traces", h.admin),
            &[],
            "",
        ),
    )
    .await;
    assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
    let err = api.json();
    assert_eq!(err["error"]["code"], "no_store", "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("store = \"none\""));
    let ready = send(
        &c,
        request(Method::GET, &format!("http://{}/readyz", h.admin), &[], ""),
    )
    .await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["store"], "none");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.got().is_empty(), "sent before the interval or shutdown");
    h.stop().await;
    let spans = rx.accepted_spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "chat gpt-4o-mini");
    assert!(!h.db.exists(), "store = none created a database");
}

#[tokio::test]
async fn store_none_without_an_exporter_does_not_start() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = llmtap::config::Config {
        store: StoreKind::None,
        ..llmtap::config::Config::default()
    };
    let err = llmtap::run(llmtap::Listeners { proxy, admin: None }, async {}, config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("store") && err.contains("OTLP"), "{err}");
}

#[tokio::test]
async fn a_down_collector_slows_neither_requests_nor_the_store() {
    // A port with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let mut h = Harness::start_with(|c| {
        c.otlp.endpoint = format!("http://{dead}");
        c.otlp.batch_interval_ms = 10;
        c.otlp.batch_size = 1;
        c.shutdown.flush_timeout_ms = 500;
    })
    .await;
    let c = client();
    let n = 40;
    let started = Instant::now();
    for _ in 0..n {
        let got = post(
            &c,
            &h.url("/v1/chat/completions"),
            &[],
            &chat_body(false, false),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let elapsed = started.elapsed();
    let stored = h.spans(n).await;
    assert_eq!(stored.len(), n);
    let m = metrics(&h).await;
    assert!(metric(&m, "llmtap_otlp_request_errors_total") >= 1.0, "{m}");
    assert_eq!(metric(&m, "llmtap_otlp_spans_exported_total"), 0.0);
    let stop = Instant::now();
    h.stop().await;
    let stop_took = stop.elapsed();
    // Bounded by flush_timeout_ms (500) plus the drain; far from the
    // 60 s retry budget.
    assert!(stop_took < Duration::from_secs(5), "{stop_took:?}");
    println!("down collector: {n} requests in {elapsed:?}, shutdown in {stop_took:?}");
}

fn traceparent(i: u32) -> (String, String) {
    let trace = llmtap::record::span::new_trace_id();
    (format!("00-{trace}-{:016x}-01", i + 1), trace)
}

#[tokio::test]
async fn sampling_keeps_or_drops_whole_traces() {
    for rate in [0.0, 0.5, 1.0] {
        let rx = Receiver::start(&[]).await;
        let endpoint = rx.url();
        let mut h = Harness::start_with(|c| {
            c.tracing.sample_rate = rate;
            c.otlp.endpoint = endpoint;
            c.otlp.batch_interval_ms = 20;
        })
        .await;
        let c = client();
        let traces = 60;
        let per_trace = 3;
        let mut all = Vec::new();
        for i in 0..traces {
            let (tp, trace) = traceparent(i);
            all.push(trace);
            for _ in 0..per_trace {
                let got = post(
                    &c,
                    &h.url("/v1/chat/completions"),
                    &[("traceparent", &tp)],
                    &chat_body(false, false),
                )
                .await;
                assert_eq!(got.status, StatusCode::OK);
            }
        }
        let expected: usize = all
            .iter()
            .filter(|t| llmtap::output::sink::sampled(t, rate))
            .count();
        let total = (traces * per_trace) as usize;
        let stored = h.spans(expected * per_trace as usize).await;
        // Nothing more is coming: the metrics already saw every request.
        let m = metrics(&h).await;
        assert_eq!(metric(&m, "llmtap_requests_total"), total as f64);
        assert_eq!(
            metric(&m, "llmtap_spans_sampled_out_total"),
            (total - expected * per_trace as usize) as f64
        );
        let exported = if expected > 0 {
            rx.wait_spans(expected * per_trace as usize, Duration::from_secs(15))
                .await
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            rx.accepted_spans()
        };
        h.stop().await;
        let stored = read_spans(&h.db).await.len().max(stored.len());
        assert_eq!(stored, expected * per_trace as usize, "rate {rate}");
        assert_eq!(exported.len(), expected * per_trace as usize, "rate {rate}");
        // Every trace whole or absent, in the store and in the export.
        let mut per: HashMap<&str, usize> = HashMap::new();
        for s in &exported {
            *per.entry(s.trace_id.as_str()).or_default() += 1;
        }
        assert!(per.values().all(|&n| n == per_trace as usize), "{per:?}");
        match rate {
            0.0 => assert_eq!(expected, 0),
            1.0 => assert_eq!(expected, traces as usize),
            _ => assert!(
                (15..=45).contains(&expected),
                "kept {expected} of {traces} traces at 0.5"
            ),
        }
    }
}

/// question → tool call → result → answer: three spans (two LLM calls and
/// the tool call), stitched into one trace with no header from the caller.
async fn tool_loop(h: &Harness, c: &HttpClient, i: usize) {
    let url = h.url("/v1/chat/completions");
    let call_id = format!("call_sample_{i}");
    let mut messages = vec![
        serde_json::json!({"role": "user", "content": format!("Weather? (loop {i}, {})", llmtap::record::span::new_span_id())}),
    ];
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": messages});
    let got = post(
        c,
        &url,
        &[
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-call-id", &call_id),
        ],
        &body.to_string(),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    messages.push(got.json()["choices"][0]["message"].clone());
    messages.push(serde_json::json!({"role": "tool", "tool_call_id": call_id, "content": "18 C"}));
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": messages});
    let got = post(c, &url, &[], &body.to_string()).await;
    assert_eq!(got.status, StatusCode::OK);
}

#[tokio::test]
async fn sampling_keeps_stitched_agent_loops_whole() {
    let rx = Receiver::start(&[]).await;
    let endpoint = rx.url();
    let mut h = Harness::start_with(|c| {
        c.tracing.sample_rate = 0.5;
        c.otlp.endpoint = endpoint;
        c.otlp.batch_interval_ms = 20;
    })
    .await;
    let c = client();
    let loops = 24;
    for i in 0..loops {
        tool_loop(&h, &c, i).await;
    }
    // Every span counted once: recorded, or sampled out.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (stored, sampled_out) = loop {
        let m = metrics(&h).await;
        let out = metric(&m, "llmtap_spans_sampled_out_total") as usize;
        let stored = read_spans(&h.db).await.len();
        if stored + out == loops * 3 {
            break (stored, out);
        }
        assert!(
            Instant::now() < deadline,
            "stored {stored} + sampled out {out} != {}",
            loops * 3
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let exported = rx.wait_spans(stored, Duration::from_secs(15)).await;
    h.stop().await;
    let rows = read_spans(&h.db).await;
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for r in &rows {
        per.entry(r["trace_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r["operation_type"].as_str().unwrap().to_string());
    }
    for (trace, ops) in &per {
        let mut ops = ops.clone();
        ops.sort();
        assert_eq!(
            ops,
            ["llm_call", "llm_call", "tool_call"],
            "trace {trace} not whole"
        );
    }
    let kept = per.len();
    assert_eq!(sampled_out, (loops - kept) * 3);
    assert!(
        (3..=21).contains(&kept),
        "kept {kept} of {loops} loops at 0.5"
    );
    let exported_ids: HashSet<&str> = exported.iter().map(|s| s.span_id.as_str()).collect();
    let stored_ids: HashSet<&str> = rows
        .iter()
        .map(|r| r["span_id"].as_str().unwrap())
        .collect();
    assert_eq!(exported_ids, stored_ids);
    println!("sampling 0.5: kept {kept} of {loops} agent loops");
}

#[tokio::test]
async fn exported_spans_are_redacted_like_stored_ones() {
    let rx = Receiver::start(&[]).await;
    let endpoint = rx.url();
    let mut h = Harness::start_with(|c| {
        c.otlp.endpoint = endpoint;
        c.otlp.batch_interval_ms = 20;
    })
    .await;
    let c = client();
    let (k, v) = auth();
    // The request's own key, and another key-shaped string, in the body.
    let leaked = "sk-proj-OTHERkeyOTHERkey0123456789";
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": format!("my key is {SECRET} and {leaked}")}]})
    .to_string();
    let got = post(&c, &h.url("/v1/chat/completions"), &[(k, &v)], &body).await;
    assert_eq!(got.status, StatusCode::OK);
    let stored = h.spans(1).await;
    rx.wait_spans(1, Duration::from_secs(15)).await;
    h.stop().await;
    assert!(stored[0]["request_body"]
        .as_str()
        .unwrap()
        .contains("[REDACTED]"));
    let got = rx.got();
    let accepted: Vec<&Got_> = got.iter().filter(|g| g.status == 200).collect();
    assert_eq!(accepted.len(), 1);
    let body = body_of(accepted[0]);
    for secret in [SECRET, leaked] {
        assert!(
            !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} exported"
        );
    }
    let spans = decode_request(&body);
    assert!(spans[0].attrs["gen_ai.input.messages"].contains("[REDACTED]"));
}
