//! Criterion benchmarks of OTLP export's costs: encoding a batch (with and
//! without message content), gzip of it, and what `SpanSink::send` costs the
//! finishing exchange with and without the exporter hand-off. Run with
//! `cargo bench --bench otlp`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use llmtap::config::OtlpConfig;
use llmtap::output::otlp::encode::{encode_request, Resource};
use llmtap::output::sink::{Outputs, SpanSink};
use llmtap::record::span::{Span, SpanStatus};

fn span(bodies: bool) -> Span {
    let mut s = Span::start(1_700_000_000_000_000);
    s.parent_span_id = Some(llmtap::record::span::new_span_id());
    s.name = "chat gpt-4o-mini".into();
    s.operation_type = "llm_call".into();
    s.provider = "openai".into();
    s.route = "/v1".into();
    s.method = "POST".into();
    s.path = "/v1/chat/completions".into();
    s.model = Some("gpt-4o-mini".into());
    s.response_model = Some("gpt-4o-mini-2024-07-18".into());
    s.response_id = Some("chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT".into());
    s.finish_reason = Some("stop".into());
    s.status = SpanStatus::Completed;
    s.http_status = Some(200);
    s.input_tokens = Some(812);
    s.output_tokens = Some(164);
    s.cached_input_tokens = Some(512);
    s.ttft_ms = Some(231.5);
    s.cost_usd = Some(0.000_231);
    s.conversation_id = Some(s.trace_id.clone());
    s.api_key_hash = Some("4f00f9b090920121".into());
    s.end_time_us = s.start_time_us + 1_234_567;
    if bodies {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        s.request_body = Some(
            serde_json::json!({"model": "gpt-4o-mini", "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": text}]})
            .to_string(),
        );
        s.response_body = Some(
            serde_json::json!({"id": "chatcmpl-1", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
            .to_string(),
        );
    }
    s
}

fn bench_encode(c: &mut Criterion) {
    let resource = Resource {
        attributes: vec![("service.name".into(), "llmtap".into())],
    };
    let server = |_: &str| Some(("api.openai.com".to_string(), 443u16));
    for bodies in [false, true] {
        let batch: Vec<Span> = (0..512).map(|_| span(bodies)).collect();
        let mut g = c.benchmark_group(if bodies {
            "otlp_encode_512_with_messages"
        } else {
            "otlp_encode_512"
        });
        g.throughput(Throughput::Elements(512));
        g.bench_function("encode", |b| {
            let mut out = Vec::with_capacity(1 << 20);
            b.iter(|| {
                out.clear();
                black_box(encode_request(&batch, &resource, &server, &mut out));
            })
        });
        let mut out = Vec::new();
        encode_request(&batch, &resource, &server, &mut out);
        println!("512 spans (messages: {bodies}): {} bytes", out.len());
        g.bench_function("gzip", |b| {
            b.iter(|| {
                let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut z, &out).unwrap();
                black_box(z.finish().unwrap())
            })
        });
        g.finish();
    }
}

fn bench_send(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    // No batcher runs, so the sink's queue stays at its budget, dropping
    // the oldest: the steady state of a stalled recorder. With the exporter
    // on, `send` makes the same one push (the batcher's fan-out shares the
    // redacted span with the exporter later, off the path).
    let config = OtlpConfig {
        endpoint: "http://127.0.0.1:9".into(),
        batch_interval_ms: 3_600_000,
        batch_size: 100_000,
        queue_max_spans: 10_000,
        ..OtlpConfig::default()
    };
    let settings = llmtap::output::otlp::Settings::new(&config, &[]).unwrap();
    let (exporter, _task) = llmtap::output::otlp::spawn(&config, settings);
    let mut g = c.benchmark_group("sink_send");
    for (name, exporter, store) in [
        ("store_only", None, true),
        ("store_and_otlp", Some(exporter.clone()), true),
        ("otlp_only", Some(exporter), false),
    ] {
        let sink = SpanSink::with_outputs(
            100_000,
            64 << 20,
            None,
            Outputs {
                store,
                exporter,
                sample_rate: 1.0,
            },
        );
        g.bench_function(name, |b| {
            b.iter_batched(|| span(true), |s| sink.send(s), BatchSize::SmallInput)
        });
    }
    g.finish();
}

criterion_group!(benches, bench_encode, bench_send);
criterion_main!(benches);
