//! Memory of the stitching index under 1,000,000 distinct conversations,
//! each registering a turn and a pending tool call, with the default bounds
//! (`StitchingConfig::default()`). `cargo run --release --example stitch_memory`.

use std::time::{Duration, Instant};

use llmtap::record::stitch::{Index, PendingCall, Turn};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    // `calls`: every conversation also leaves a tool call that never
    // resolves (the worst case); default: turns only.
    let with_calls = std::env::args().any(|a| a == "calls");
    let defaults = llmtap::config::StitchingConfig::default();
    let index = Index::new(
        Duration::from_secs(defaults.ttl_secs),
        defaults.max_entries,
        defaults.max_pending_calls,
    );
    let start = Instant::now();
    println!("conversations,turns,calls,rss_mb");
    println!("0,0,0,{:.1}", rss_kb() as f64 / 1024.0);
    for i in 0..1_000_000u64 {
        let trace_id = format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let span_id = format!("{:016x}", i);
        let turn = Turn {
            trace_id: trace_id.clone(),
            root_span_id: span_id.clone(),
            conversation_id: trace_id.clone(),
        };
        index.register(Some(i), None, turn);
        let call = PendingCall {
            call_id: format!("call_{i:020}"),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris","unit":"celsius"}"#.into(),
            trace_id,
            parent_span_id: span_id,
            conversation_id: None,
            session_id: None,
            user_id: None,
            api_key_hash: Some("0123456789abcdef".into()),
            provider: "openai".into(),
            route: "/v1".into(),
            asked_at_us: i as i64,
        };
        if with_calls {
            index.add_calls(i % 1000, vec![call]);
        }
        if (i + 1) % 200_000 == 0 {
            let (turns, _, calls) = index.sizes();
            println!("{},{turns},{calls},{:.1}", i + 1, rss_kb() as f64 / 1024.0);
        }
    }
    println!("elapsed_s,{:.2}", start.elapsed().as_secs_f64());
}
