//! Property: splitting a recorded stream at arbitrary points (and with any
//! of the three SSE line endings) yields exactly the same span fields.
//! Streams are recorded from the in-repo mock provider in every format.

mod common;
mod mock;

use std::sync::OnceLock;

use llmtap::config::Format;
use llmtap::record::providers::{Endpoint, EventStream, ResponseFacts, StreamParser};
use llmtap::record::tokens::Encoding;
use proptest::prelude::*;

struct Recorded {
    endpoint: Endpoint,
    count_text: bool,
    bytes: Vec<u8>,
}

/// (format, path, headers, body) of one recorded stream.
type Case = (
    Format,
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
);

fn cases() -> Vec<Case> {
    let chat =
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let chat_usage = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"n":2}"#;
    let responses = r#"{"model":"gpt-4.1","input":"hi","stream":true}"#;
    let messages = r#"{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let legacy = r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi","stream":true}"#;
    vec![
        (
            Format::Openai,
            "/v1/chat/completions",
            vec![("x-mock-words", "12")],
            chat,
        ),
        (
            Format::Openai,
            "/v1/chat/completions",
            vec![("x-mock-words", "5")],
            chat_usage,
        ),
        (
            Format::Openai,
            "/v1/chat/completions",
            vec![("x-mock-tool-call", "get_weather")],
            chat,
        ),
        (
            Format::Openai,
            "/v1/chat/completions",
            vec![("x-mock-scenario", "refusal")],
            chat_usage,
        ),
        (
            Format::Openai,
            "/v1/chat/completions",
            vec![("x-mock-scenario", "malformed-sse")],
            chat,
        ),
        (
            Format::Openai,
            "/v1/completions",
            vec![("x-mock-words", "7")],
            legacy,
        ),
        (
            Format::Openai,
            "/v1/responses",
            vec![("x-mock-words", "9"), ("x-mock-reasoning", "3")],
            responses,
        ),
        (
            Format::Openai,
            "/v1/responses",
            vec![("x-mock-tool-call", "lookup")],
            responses,
        ),
        (
            Format::Anthropic,
            "/v1/messages",
            vec![("x-mock-thinking", "1"), ("x-mock-cached", "4")],
            messages,
        ),
        (
            Format::Anthropic,
            "/v1/messages",
            vec![("x-mock-tool-call", "get_weather")],
            messages,
        ),
        (
            Format::Anthropic,
            "/v1/messages",
            vec![("x-mock-scenario", "stream-error")],
            messages,
        ),
    ]
}

fn recorded() -> &'static [Recorded] {
    static R: OnceLock<Vec<Recorded>> = OnceLock::new();
    R.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let m = mock::MockProvider::start().await;
            let c = common::client();
            let mut out = Vec::new();
            for (format, path, headers, body) in cases() {
                let got = common::post(&c, &format!("{}{path}", m.url()), &headers, body).await;
                assert_eq!(got.status, http::StatusCode::OK, "{path} {headers:?}");
                let endpoint = Endpoint::classify(format, &http::Method::POST, path);
                let count_text = !body.contains("include_usage");
                out.push(Recorded {
                    endpoint,
                    count_text,
                    bytes: got.body.to_vec(),
                });
            }
            out
        })
    })
}

fn facts(r: &Recorded, pieces: &[&[u8]]) -> (ResponseFacts, bool) {
    let parser = StreamParser::for_endpoint(r.endpoint, Encoding::O200k, r.count_text).unwrap();
    let mut s = EventStream::new(parser, 1 << 20);
    for p in pieces {
        s.feed(p);
    }
    let end = s.saw_end();
    (s.finish(), end)
}

fn with_line_endings(bytes: &[u8], ending: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if b == b'\n' {
            out.extend_from_slice(ending);
        } else {
            out.push(b);
        }
    }
    out
}

#[test]
fn recorded_streams_parse_to_real_facts() {
    // Sanity: the fixtures are what they claim (so the property is not
    // comparing empty results).
    let r = recorded();
    let (f, end) = facts(&r[1], &[&r[1].bytes]);
    assert!(end);
    assert_eq!(f.usage.output, Some(10));
    let (f, _) = facts(&r[2], &[&r[2].bytes]);
    assert_eq!(f.tool_calls[0].arguments, mock::TOOL_ARGS);
    let (f, _) = facts(&r[8], &[&r[8].bytes]);
    assert_eq!(f.usage.cached_input, Some(4));
    let (f, end) = facts(&r[10], &[&r[10].bytes]);
    assert!(end && f.error.is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_split_gives_the_same_span_fields(
        case in 0usize..11,
        ending in 0usize..3,
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let r = &recorded()[case];
        let ending: &[u8] = [&b"\n"[..], b"\r\n", b"\r"][ending];
        let bytes = with_line_endings(&r.bytes, ending);
        let whole = facts(r, &[&bytes]);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for p in points {
            pieces.push(&bytes[last..p]);
            last = p;
        }
        pieces.push(&bytes[last..]);
        prop_assert_eq!(facts(r, &pieces), whole);
    }
}

#[test]
fn byte_at_a_time_matches_whole() {
    for r in recorded() {
        let whole = facts(r, &[&r.bytes]);
        let bytes: Vec<&[u8]> = r.bytes.chunks(1).collect();
        assert_eq!(facts(r, &bytes), whole);
    }
}
