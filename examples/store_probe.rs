//! Span writes per second by transaction size (the batcher's commit
//! shape): `cargo run --release --example store_probe`.
use llmtap::span::{Span, SpanStatus};
use std::time::Instant;
fn span(i: i64, bodies: bool) -> Span {
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
    if bodies {
        s.request_body = Some(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say eight words."}]}"#
                .into(),
        );
        s.response_body = Some("{\"id\":\"chatcmpl-x\",\"choices\":[]}".repeat(8));
    }
    s
}
#[tokio::main]
async fn main() {
    for (label, bodies, rows, tx) in [
        ("tx10", true, 200usize, 10usize),
        ("tx30", true, 200, 30),
        ("tx100", true, 200, 100),
        ("tx300", true, 200, 300),
        ("tx1000", true, 200, 1000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let url =
            llmtap::store::StoreUrl::parse(&format!("sqlite://{}/p.db", dir.path().display()))
                .unwrap();
        let store = llmtap::store::Store::open(&url).await.unwrap();
        let n = 20_000;
        let spans: Vec<Span> = (0..n).map(|i| span(i, bodies)).collect();
        let t = Instant::now();
        for chunk in spans.chunks(tx) {
            store.write_spans(chunk, rows).await.unwrap();
        }
        println!(
            "{label}: {:.0} spans/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
}
