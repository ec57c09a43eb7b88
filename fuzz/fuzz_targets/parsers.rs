//! Fuzzes every parser of untrusted bytes: the SSE parser feeding each
//! format's stream parser (with the input split at a fuzzer-chosen point),
//! every whole-body JSON extractor, the request parser, the input
//! estimators, the error-body reader, the messages reading (a stored body
//! replayed, JSON or SSE), the content decoders and the query
//! API's parameter, time and cursor parsers. None may
//! panic; memory is bounded by the parsers' own caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::config::Format;
use llmtap::record::decode::Decoder;
use llmtap::record::providers::{self, Endpoint, EventStream, StreamParser};
use llmtap::record::tokens::Encoding;

const ENDPOINTS: [Endpoint; 6] = [
    Endpoint::Chat,
    Endpoint::Completions,
    Endpoint::Responses,
    Endpoint::Embeddings,
    Endpoint::Messages,
    Endpoint::CountTokens,
];

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let selector = data[0];
    let body = &data[1..];
    let endpoint = ENDPOINTS[(selector as usize) % ENDPOINTS.len()];
    let split = if body.is_empty() { 0 } else { (selector as usize * 7) % body.len() };

    // Streams, fed in two pieces.
    if let Some(parser) = StreamParser::for_endpoint(endpoint, Encoding::O200k, selector & 1 == 0) {
        let mut s = EventStream::new(parser, 64 * 1024);
        s.feed(&body[..split]);
        s.feed(&body[split..]);
        let _ = s.saw_end();
        let _ = s.finish();
    }
    // Whole bodies.
    let _ = providers::parse_response(endpoint, body, Encoding::O200k);
    let _ = providers::parse_request(body);
    let _ = providers::parse_error_body(body);
    if selector & 2 == 0 {
        let _ = providers::estimate_input(endpoint, body, Encoding::O200k);
    }
    // Messages of stored bodies (the OTLP export's and the admin UI's).
    let text = String::from_utf8_lossy(body);
    let _ = providers::messages::input(endpoint, &text).semconv();
    let _ = providers::messages::output(endpoint, &text).shown_json();
    let _ = Endpoint::classify(Format::Openai, &http::Method::POST, &String::from_utf8_lossy(body));
    let _ = llmtap::path::exact_usage::inject(body);
    // The query API's parameters (query string, times, cursors).
    let text = String::from_utf8_lossy(body);
    if let Ok(params) = llmtap::admin::api::Params::parse(Some(&text), llmtap::admin::api::FILTER_PARAMS) {
        let _ = params.filter();
    }
    let _ = llmtap::admin::api::parse_time(&text);
    let _ = llmtap::admin::api::decode_cursor(&text);
    // Decoders (bounded output).
    for enc in ["gzip", "deflate", "br", "zstd"] {
        let mut d = Decoder::new(Some(enc), 1 << 20);
        let mut total = 0usize;
        d.feed(&body[..split], &mut |p| total += p.len());
        d.feed(&body[split..], &mut |p| total += p.len());
        assert!(total <= 1 << 20);
    }
});
