//! Criterion benchmarks of the per-frame and per-span hot path:
//! the tee, SSE parsing with usage extraction, the token estimator, span
//! sizing, a SQLite batch insert, redaction, and the request-side reading
//! that stitching does per request. Run with `cargo bench`.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http_body::{Body, Frame};
use llmtap::path::tee::{End, Observer, Tee};
use llmtap::record::providers::{Endpoint, EventStream, StreamParser};
use llmtap::record::span::{Span, SpanStatus};
use llmtap::record::tokens::{Encoding, StreamCounter};

/// A realistic OpenAI chat stream of `words` content chunks, as one buffer.
fn chat_stream(words: usize, usage: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let head = r#"{"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":"#;
    let vocab = [
        "The",
        " quick",
        " brown",
        " fox",
        " jumps",
        " over",
        " the",
        " lazy",
        " dog",
        ".",
        " It",
        "'s",
        " a",
        " sunny",
        " day",
        " in",
        " Paris",
        ",",
        " and",
        " everyone",
    ];
    out.extend_from_slice(format!("data: {head}{{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n").as_bytes());
    for i in 0..words {
        let w = vocab[i % vocab.len()];
        out.extend_from_slice(format!("data: {head}{{\"content\":\"{w}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n").as_bytes());
    }
    out.extend_from_slice(
        format!("data: {head}{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n")
            .as_bytes(),
    );
    if usage {
        out.extend_from_slice(br#"data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#);
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// Realistic English-ish text for the estimator.
fn text(bytes: usize) -> String {
    let vocab = [
        "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog.", "It's", "a",
        "sunny", "day", "in", "Paris,", "and", "everyone", "writes", "Rust:", "fn", "main()", "{",
        "}", "42", "résumé", "naïve", "\n",
    ];
    let mut s = String::with_capacity(bytes + 16);
    let mut i = 7usize;
    while s.len() < bytes {
        s.push_str(vocab[i % vocab.len()]);
        s.push(' ');
        i = i.wrapping_mul(1103515245).wrapping_add(12345) >> 3;
    }
    s
}

fn bench_sse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    for (name, usage) in [
        ("chat_stream_with_usage", true),
        ("chat_stream_counting_text", false),
    ] {
        let stream = chat_stream(2000, usage);
        // Frames as a provider sends them: one event each.
        let frames: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let parser =
                    StreamParser::for_endpoint(Endpoint::Chat, Encoding::O200k, !usage).unwrap();
                let mut s = EventStream::new(parser, 1 << 20);
                for f in &frames {
                    black_box(s.feed(f));
                }
                black_box(s.finish())
            })
        });
    }
    g.finish();
}

fn bench_estimator(c: &mut Criterion) {
    let t = text(4 << 20);
    // Load the encoder outside the measurement.
    let _ = llmtap::record::tokens::count(Encoding::O200k, "warm up");
    let mut g = c.benchmark_group("estimator");
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.sample_size(10);
    g.bench_function("o200k_whole_text", |b| {
        b.iter(|| black_box(llmtap::record::tokens::count(Encoding::O200k, &t)))
    });
    // Streamed deltas of ~4 bytes, as generated text arrives.
    let deltas: Vec<&str> = t.split_inclusive(' ').collect();
    g.bench_function("o200k_streamed_deltas", |b| {
        b.iter(|| {
            let mut c = StreamCounter::new(Encoding::O200k);
            for d in &deltas {
                c.push(d);
            }
            black_box(c.total())
        })
    });
    g.finish();
}

/// An observer that only counts, to measure the tee itself.
struct Count(usize);
impl Observer for Count {
    fn on_data(&mut self, data: &Bytes) {
        self.0 += data.len();
    }
    fn on_end(self, end: End) {
        black_box((self.0, end));
    }
}

/// A body of pre-made frames.
struct Frames(std::vec::IntoIter<Bytes>);
impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}

fn bench_tee(c: &mut Criterion) {
    let frames: Vec<Bytes> = (0..1000)
        .map(|i| Bytes::from(format!("data: {{\"n\":{i}}}\n\n")))
        .collect();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut g = c.benchmark_group("tee");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("1000_frames_through_tee", |b| {
        b.iter_batched(
            || Tee::new(Frames(frames.clone().into_iter()), Count(0)),
            |tee| {
                let mut tee = std::pin::pin!(tee);
                while let Poll::Ready(Some(f)) = tee.as_mut().poll_frame(&mut cx) {
                    black_box(f.ok());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn span(i: i64) -> Span {
    let mut s = Span::start(1_700_000_000_000_000 + i);
    s.name = "chat gpt-4o-mini".into();
    s.operation_type = "llm_call".into();
    s.provider = "openai".into();
    s.route = "/v1".into();
    s.method = "POST".into();
    s.path = "/v1/chat/completions".into();
    s.model = Some("gpt-4o-mini".into());
    s.response_model = Some("gpt-4o-mini-2024-07-18".into());
    s.status = SpanStatus::Completed;
    s.http_status = Some(200);
    s.input_tokens = Some(19);
    s.output_tokens = Some(10);
    s.cost_usd = Some(0.0000123);
    s.response_id = Some("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT".into());
    s.request_body = Some(
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say eight words."}]}"#
            .into(),
    );
    s.response_body = Some("{\"id\":\"chatcmpl-x\",\"choices\":[]}".repeat(8));
    s
}

fn bench_store(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = llmtap::output::store::StoreUrl::parse(&format!(
        "sqlite://{}/bench.db",
        dir.path().display()
    ))
    .unwrap();
    let store = rt
        .block_on(llmtap::output::store::Store::open(&url))
        .unwrap();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(200));
    g.sample_size(30);
    let mut n = 0i64;
    g.bench_function("sqlite_insert_200_spans", |b| {
        b.iter_batched(
            || {
                n += 200;
                (0..200).map(|i| span(n + i)).collect::<Vec<_>>()
            },
            |spans| rt.block_on(store.write_spans(&spans)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let s = span(0);
    g.bench_function("span_size_estimate", |b| {
        b.iter(|| black_box(s.approx_bytes()))
    });
    g.finish();
}

/// Redaction of a captured body with the default patterns: a 64 KiB chat
/// request with no secret (the common case) and one with a key in it.
fn bench_redact(c: &mut Criterion) {
    let r = llmtap::output::redact::Redactor::defaults();
    let clean = chat_stream(2000, true);
    let clean = String::from_utf8_lossy(&clean[..clean.len().min(64 * 1024)]).into_owned();
    let mut dirty = clean.clone();
    dirty.insert_str(dirty.len() / 2, " sk-proj-abcdefghijklmnop0123456789 ");
    let mut g = c.benchmark_group("redact");
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("64KiB_clean", |b| {
        b.iter(|| black_box(r.redact(black_box(&clean))).len())
    });
    g.bench_function("64KiB_one_key", |b| {
        b.iter(|| black_box(r.redact(black_box(&dirty))).len())
    });
    // Non-ASCII text (a Chinese / accented / emoji chat), no secret.
    let unicode = "Les données sont arrivées à 14h — 数据已经到达，请检查。🙂 ".repeat(1200);
    let unicode = &unicode[..unicode.floor_char_boundary(clean.len())];
    g.bench_function("64KiB_non_ascii_clean", |b| {
        b.iter(|| black_box(r.redact(black_box(unicode))).len())
    });
    // A whole span of `scripts/bench.sh`'s shape (small bodies): what the
    // batcher pays per span on the common path.
    g.throughput(Throughput::Elements(1));
    g.bench_function("small_span", |b| {
        b.iter_batched(
            || span(0),
            |mut s| {
                r.redact_span(&mut s);
                s
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Stitching's reading of a chat request (`providers::conversation`), run
/// for every request when stitching is on: the two-message request of
/// `scripts/bench.sh`, and a 40-message agent history with tool calls.
fn bench_conversation(c: &mut Criterion) {
    let small = br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say eight words."}]}"#.to_vec();
    let mut agent = String::from(
        r#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are a helpful assistant with tools."}"#,
    );
    for i in 0..13 {
        agent.push_str(&format!(
            r#",{{"role":"user","content":[{{"type":"text","text":"What is the weather in city number {i}, and what should I wear there today?"}}]}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_{i}","type":"function","function":{{"name":"get_weather","arguments":"{{\"city\":\"c{i}\"}}"}}}}]}},{{"role":"tool","tool_call_id":"call_{i}","content":"{{\"temp_c\":{i},\"sky\":\"clear\"}}"}}"#
        ));
    }
    agent.push_str("]}");
    // A long chat: ~100 KiB of history in 60 turns of prose.
    let prose = text(1700);
    let mut long = String::from(r#"{"model":"gpt-4o","messages":["#);
    for i in 0..60 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let comma = if i == 0 { "" } else { "," };
        let content = serde_json::to_string(&prose).unwrap();
        long.push_str(&format!(
            r#"{comma}{{"role":"{role}","content":{content}}}"#
        ));
    }
    long.push_str("]}");
    let mut g = c.benchmark_group("conversation");
    for (name, body) in [
        ("chat_2_messages", small),
        ("chat_40_messages_tools", agent.into_bytes()),
        ("chat_60_turns_100KiB", long.into_bytes()),
    ] {
        let msgs =
            llmtap::record::providers::conversation(Endpoint::Chat, &body).map(|c| c.msgs.len());
        assert!(msgs.is_some_and(|n| n >= 2), "{name}: not a chat request");
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                llmtap::record::providers::conversation(Endpoint::Chat, black_box(&body))
                    .map(|c| c.msgs.len())
                    .unwrap_or(0)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_sse,
    bench_estimator,
    bench_tee,
    bench_store,
    bench_redact,
    bench_conversation
);
criterion_main!(benches);
