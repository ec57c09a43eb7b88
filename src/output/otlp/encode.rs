//! OTLP encoding: span records → an `ExportTraceServiceRequest` in protobuf
//! wire format, following the OpenTelemetry GenAI semantic conventions.
//!
//! Owns the hand-written protobuf writer for the OTLP trace subset llmtap
//! needs (field numbers from opentelemetry-proto's `trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto`,
//! `collector/trace/v1/trace_service.proto`) and the mapping of a span
//! record's fields to attributes. Pure: no I/O, no clocks. Must never emit
//! an API key or an auth header: a span record holds neither (only the
//! salted key hash), and nothing here reads headers.

use crate::record::span::{Span, SpanStatus};

// === protobuf wire format ===

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

fn put_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    put_bytes(buf, field, s.as_bytes());
}

fn put_u64(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(buf, field, VARINT);
    put_varint(buf, v);
}

fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    put_tag(buf, field, FIXED32);
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Writes a length-delimited sub-message built by `f`. The length prefix
/// is patched in after: the body is written once, in place.
fn put_message(buf: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    put_tag(buf, field, LEN);
    let start = buf.len();
    f(buf);
    let len = buf.len() - start;
    let mut prefix = Vec::with_capacity(5);
    put_varint(&mut prefix, len as u64);
    buf.splice(start..start, prefix);
}

// === attribute values ===

/// One OTLP `AnyValue` (the kinds llmtap emits).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    StrArray(Vec<String>),
}

fn put_any_value(buf: &mut Vec<u8>, v: &Value) {
    // AnyValue: string_value = 1, bool_value = 2, int_value = 3,
    // double_value = 4, array_value = 5 (ArrayValue { values = 1 }).
    match v {
        Value::Str(s) => put_str(buf, 1, s),
        Value::Bool(b) => put_u64(buf, 2, u64::from(*b)),
        Value::Int(i) => put_u64(buf, 3, *i as u64),
        Value::Double(d) => put_fixed64(buf, 4, d.to_bits()),
        Value::StrArray(items) => put_message(buf, 5, |b| {
            for item in items {
                put_message(b, 1, |b| put_str(b, 1, item));
            }
        }),
    }
}

/// KeyValue { key = 1, value = 2 }.
fn put_key_value(buf: &mut Vec<u8>, field: u32, key: &str, v: &Value) {
    put_message(buf, field, |b| {
        put_str(b, 1, key);
        put_message(b, 2, |b| put_any_value(b, v));
    });
}

// === the request ===

/// What is the same for every span of a process: the resource and scope.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    /// `service.name` and `OTEL_RESOURCE_ATTRIBUTES`, in order.
    pub attributes: Vec<(String, String)>,
}

/// Where a route's upstream is (`server.address`, `server.port`).
pub type ServerLookup<'a> = &'a dyn Fn(&str) -> Option<(String, u16)>;

/// Encodes `spans` as one `ExportTraceServiceRequest`. Spans whose ids are
/// not valid W3C hex are skipped; the count of skipped spans is returned.
pub fn encode_request<S: std::borrow::Borrow<Span>>(
    spans: &[S],
    resource: &Resource,
    server: ServerLookup<'_>,
    out: &mut Vec<u8>,
) -> usize {
    let mut skipped = 0;
    // ExportTraceServiceRequest { resource_spans = 1 }
    put_message(out, 1, |b| {
        // ResourceSpans { resource = 1, scope_spans = 2 }
        put_message(b, 1, |b| {
            for (k, v) in &resource.attributes {
                put_key_value(b, 1, k, &Value::Str(v.clone()));
            }
        });
        put_message(b, 2, |b| {
            // ScopeSpans { scope = 1, spans = 2 }; scope { name = 1, version = 2 }
            put_message(b, 1, |b| {
                put_str(b, 1, "llmtap");
                put_str(b, 2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                if !encode_span(b, span.borrow(), server) {
                    skipped += 1;
                }
            }
        });
    });
    skipped
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

/// SpanKind values (trace.proto).
pub const KIND_INTERNAL: u64 = 1;
pub const KIND_CLIENT: u64 = 3;
/// Status.StatusCode values.
pub const STATUS_OK: u64 = 1;
pub const STATUS_ERROR: u64 = 2;

fn encode_span(buf: &mut Vec<u8>, s: &Span, server: ServerLookup<'_>) -> bool {
    let Some(trace_id) = hex_bytes::<16>(&s.trace_id) else {
        return false;
    };
    let Some(span_id) = hex_bytes::<8>(&s.span_id) else {
        return false;
    };
    let parent = s.parent_span_id.as_deref().and_then(hex_bytes::<8>);
    let tool = s.operation_type == "tool_call";
    let attrs = attributes(s, server);
    put_message(buf, 2, |b| {
        put_bytes(b, 1, &trace_id);
        put_bytes(b, 2, &span_id);
        if let Some(p) = parent {
            put_bytes(b, 4, &p);
        }
        put_str(b, 5, &s.name);
        put_u64(b, 6, if tool { KIND_INTERNAL } else { KIND_CLIENT });
        put_fixed64(b, 7, (s.start_time_us.max(0) as u64).saturating_mul(1000));
        put_fixed64(b, 8, (s.end_time_us.max(0) as u64).saturating_mul(1000));
        for (k, v) in &attrs {
            put_key_value(b, 9, k, v);
        }
        // Status { message = 2, code = 3 }: ERROR for failed and cancelled
        // spans, UNSET otherwise (instrumentation leaves OK to the app).
        if matches!(s.status, SpanStatus::Failed | SpanStatus::Cancelled) {
            put_message(b, 15, |b| {
                if let Some(m) = &s.error_message {
                    put_str(b, 2, m);
                }
                put_u64(b, 3, STATUS_ERROR);
            });
        }
        // flags = 16: sampled (W3C trace-flags 01).
        put_fixed32(b, 16, 1);
    });
    true
}

/// `gen_ai.operation.name` of a span: the first word of its name for the
/// GenAI operations, `execute_tool` for tool spans.
pub fn operation_name(s: &Span) -> Option<&str> {
    if s.operation_type == "tool_call" {
        return Some("execute_tool");
    }
    let first = s.name.split(' ').next()?;
    matches!(
        first,
        "chat" | "text_completion" | "embeddings" | "count_tokens"
    )
    .then_some(first)
}

/// The span's attributes, semantic-convention names first.
pub fn attributes(s: &Span, server: ServerLookup<'_>) -> Vec<(String, Value)> {
    let mut a = Attrs(Vec::with_capacity(32));
    let tool = s.operation_type == "tool_call";
    if let Some(op) = operation_name(s) {
        a.put("gen_ai.operation.name", Value::Str(op.into()));
    }
    if !s.provider.is_empty() {
        a.put("gen_ai.provider.name", Value::Str(s.provider.clone()));
    }
    let props: Option<serde_json::Map<String, serde_json::Value>> = s
        .properties
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok());
    if tool {
        for key in ["gen_ai.tool.name", "gen_ai.tool.call.id"] {
            if let Some(serde_json::Value::String(v)) = props.as_ref().and_then(|p| p.get(key)) {
                a.put(key, Value::Str(v.clone()));
            }
        }
        a.put("gen_ai.tool.type", Value::Str("function".into()));
    } else {
        call_attributes(&mut a, s);
    }
    context_attributes(&mut a, s, server);
    if let Some(props) = &props {
        property_attributes(&mut a, props, tool);
    }
    message_attributes(&mut a, s, tool);
    a.0
}

/// Attributes in the order they are written.
struct Attrs(Vec<(String, Value)>);

impl Attrs {
    fn put(&mut self, k: &str, v: Value) {
        self.0.push((k.to_string(), v));
    }
}

/// A model call's facts: models, response, tokens, timing, cost, HTTP.
fn call_attributes(a: &mut Attrs, s: &Span) {
    if let Some(m) = &s.model {
        a.put("gen_ai.request.model", Value::Str(m.clone()));
    }
    if let Some(m) = &s.response_model {
        a.put("gen_ai.response.model", Value::Str(m.clone()));
    }
    if let Some(id) = &s.response_id {
        a.put("gen_ai.response.id", Value::Str(id.clone()));
    }
    if let Some(fr) = &s.finish_reason {
        a.put(
            "gen_ai.response.finish_reasons",
            Value::StrArray(vec![fr.clone()]),
        );
    }
    let tokens = [
        ("gen_ai.usage.input_tokens", s.input_tokens),
        ("gen_ai.usage.output_tokens", s.output_tokens),
        (
            "gen_ai.usage.cache_read.input_tokens",
            s.cached_input_tokens,
        ),
        (
            "gen_ai.usage.cache_creation.input_tokens",
            s.cache_write_tokens,
        ),
        ("gen_ai.usage.reasoning.output_tokens", s.reasoning_tokens),
    ];
    for (k, v) in tokens {
        if let Some(v) = v {
            a.put(k, Value::Int(v));
        }
    }
    a.put("gen_ai.request.stream", Value::Bool(s.stream));
    if let Some(ttft) = s.ttft_ms {
        a.put(
            "gen_ai.response.time_to_first_chunk",
            Value::Double(ttft / 1000.0),
        );
    }
    a.put("llmtap.tokens_estimated", Value::Bool(s.tokens_estimated));
    if let Some(c) = s.cost_usd {
        a.put("llmtap.cost_usd", Value::Double(c));
    }
    if let Some(code) = s.http_status {
        a.put("http.response.status_code", Value::Int(i64::from(code)));
    }
    if !s.method.is_empty() {
        a.put("http.request.method", Value::Str(s.method.clone()));
    }
    if !s.path.is_empty() {
        a.put("url.path", Value::Str(s.path.clone()));
    }
}

/// What places the span: conversation, server, error, status, route, who.
fn context_attributes(a: &mut Attrs, s: &Span, server: ServerLookup<'_>) {
    if let Some(c) = &s.conversation_id {
        a.put("gen_ai.conversation.id", Value::Str(c.clone()));
    }
    if let Some((host, port)) = server(&s.route) {
        a.put("server.address", Value::Str(host));
        a.put("server.port", Value::Int(i64::from(port)));
    }
    if let Some(e) = &s.error_type {
        a.put("error.type", Value::Str(e.clone()));
    }
    a.put("llmtap.status", Value::Str(s.status.as_str().into()));
    a.put(
        "llmtap.operation_type",
        Value::Str(s.operation_type.clone()),
    );
    if !s.route.is_empty() {
        a.put("llmtap.route", Value::Str(s.route.clone()));
    }
    if let Some(v) = &s.session_id {
        a.put("session.id", Value::Str(v.clone()));
    }
    if let Some(v) = &s.user_id {
        a.put("user.id", Value::Str(v.clone()));
    }
    if let Some(v) = &s.api_key_hash {
        a.put("llmtap.api_key_hash", Value::Str(v.clone()));
    }
}

/// Custom properties as `llmtap.property.*` (a tool span's own keys are
/// already its `gen_ai.tool.*`).
fn property_attributes(
    a: &mut Attrs,
    props: &serde_json::Map<String, serde_json::Value>,
    tool: bool,
) {
    for (k, v) in props {
        if tool && k.starts_with("gen_ai.tool.") {
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        a.put(&format!("llmtap.property.{k}"), Value::Str(text));
    }
}

/// Message content: present only when body capture is on (the record then
/// holds the bodies).
fn message_attributes(a: &mut Attrs, s: &Span, tool: bool) {
    if tool {
        if let Some(args) = &s.request_body {
            a.put("gen_ai.tool.call.arguments", Value::Str(args.clone()));
        }
        if let Some(result) = &s.response_body {
            a.put("gen_ai.tool.call.result", Value::Str(result.clone()));
        }
    } else {
        if let Some(m) = super::messages::input(s) {
            a.put("gen_ai.input.messages", Value::Str(m));
        }
        if let Some(m) = super::messages::output(s) {
            a.put("gen_ai.output.messages", Value::Str(m));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal protobuf reader for the tests: (field, wire, payload).
    pub(crate) fn fields(mut b: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
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
            let (field, wire) = ((tag >> 3) as u32, (tag & 7) as u8);
            let payload = match wire {
                VARINT => {
                    let v = varint(&mut b);
                    v.to_le_bytes().to_vec()
                }
                FIXED64 => {
                    let p = b[..8].to_vec();
                    b = &b[8..];
                    p
                }
                FIXED32 => {
                    let p = b[..4].to_vec();
                    b = &b[4..];
                    p
                }
                LEN => {
                    let n = varint(&mut b) as usize;
                    let p = b[..n].to_vec();
                    b = &b[n..];
                    p
                }
                w => panic!("wire type {w}"),
            };
            out.push((field, wire, payload));
        }
        out
    }

    fn one(b: &[u8], field: u32) -> Vec<u8> {
        fields(b)
            .into_iter()
            .find(|f| f.0 == field)
            .unwrap_or_else(|| panic!("no field {field}"))
            .2
    }

    fn u64_of(p: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a[..p.len()].copy_from_slice(p);
        u64::from_le_bytes(a)
    }

    #[test]
    fn varints_match_the_spec_examples() {
        let mut b = Vec::new();
        put_varint(&mut b, 150);
        assert_eq!(b, [0x96, 0x01]);
        let mut b = Vec::new();
        put_u64(&mut b, 3, (-1i64) as u64);
        assert_eq!(b.len(), 11, "negative int64 is a 10-byte varint");
        let mut b = Vec::new();
        put_message(&mut b, 1, |b| b.extend_from_slice(&[7u8; 200]));
        assert_eq!(&b[..3], &[0x0a, 0xc8, 0x01]);
        assert_eq!(b.len(), 203);
    }

    fn sample() -> Span {
        let mut s = Span::start(1_700_000_000_000_000);
        s.trace_id = "0af7651916cd43dd8448eb211c80319c".into();
        s.span_id = "b7ad6b7169203331".into();
        s.parent_span_id = Some("00f067aa0ba902b7".into());
        s.name = "chat gpt-4o".into();
        s.operation_type = "llm_call".into();
        s.provider = "openai".into();
        s.route = "/v1".into();
        s.model = Some("gpt-4o".into());
        s.response_model = Some("gpt-4o-2024-08-06".into());
        s.response_id = Some("chatcmpl-1".into());
        s.finish_reason = Some("stop".into());
        s.input_tokens = Some(12);
        s.output_tokens = Some(3);
        s.ttft_ms = Some(250.0);
        s.stream = true;
        s.status = SpanStatus::Failed;
        s.error_type = Some("rate_limit".into());
        s.error_message = Some("slow down".into());
        s.end_time_us = s.start_time_us + 1_000_000;
        s.properties = Some(r#"{"team":"a","n":3}"#.into());
        s
    }

    #[test]
    fn a_span_decodes_back_to_its_fields() {
        let server = |route: &str| (route == "/v1").then(|| ("api.openai.com".to_string(), 443));
        let resource = Resource {
            attributes: vec![("service.name".into(), "llmtap".into())],
        };
        let mut out = Vec::new();
        assert_eq!(encode_request(&[sample()], &resource, &server, &mut out), 0);
        let rs = one(&out, 1);
        let res = one(&rs, 1);
        let kv = one(&res, 1);
        assert_eq!(one(&kv, 1), b"service.name");
        assert_eq!(one(&one(&kv, 2), 1), b"llmtap");
        let ss = one(&rs, 2);
        assert_eq!(one(&one(&ss, 1), 1), b"llmtap");
        let span = one(&ss, 2);
        assert_eq!(
            one(&span, 1),
            hex_bytes::<16>("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(one(&span, 4), hex_bytes::<8>("00f067aa0ba902b7").unwrap());
        assert_eq!(one(&span, 5), b"chat gpt-4o");
        assert_eq!(u64_of(&one(&span, 6)), KIND_CLIENT);
        assert_eq!(u64_of(&one(&span, 7)), 1_700_000_000_000_000_000);
        assert_eq!(u64_of(&one(&span, 8)), 1_700_000_001_000_000_000);
        let status = one(&span, 15);
        assert_eq!(one(&status, 2), b"slow down");
        assert_eq!(u64_of(&one(&status, 3)), STATUS_ERROR);
        let attrs: Vec<(String, Vec<u8>)> = fields(&span)
            .into_iter()
            .filter(|f| f.0 == 9)
            .map(|f| {
                (
                    String::from_utf8(one(&f.2, 1)).unwrap(),
                    one(&f.2, 2), // the AnyValue
                )
            })
            .collect();
        let get = |k: &str| {
            attrs
                .iter()
                .find(|a| a.0 == k)
                .unwrap_or_else(|| panic!("no {k}"))
                .1
                .clone()
        };
        assert_eq!(one(&get("gen_ai.operation.name"), 1), b"chat");
        assert_eq!(u64_of(&one(&get("gen_ai.usage.input_tokens"), 3)), 12);
        assert_eq!(u64_of(&one(&get("gen_ai.request.stream"), 2)), 1);
        assert_eq!(
            f64::from_bits(u64_of(&one(&get("gen_ai.response.time_to_first_chunk"), 4))),
            0.25
        );
        let arr = one(&get("gen_ai.response.finish_reasons"), 5);
        assert_eq!(one(&one(&arr, 1), 1), b"stop");
        assert_eq!(one(&get("server.address"), 1), b"api.openai.com");
        assert_eq!(u64_of(&one(&get("server.port"), 3)), 443);
        assert_eq!(one(&get("error.type"), 1), b"rate_limit");
        assert_eq!(one(&get("llmtap.property.team"), 1), b"a");
        assert_eq!(one(&get("llmtap.property.n"), 1), b"3");
        // Keys are unique.
        let mut keys: Vec<&String> = attrs.iter().map(|a| &a.0).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n);
    }

    #[test]
    fn tool_spans_are_internal_and_bad_ids_are_skipped() {
        let mut t = sample();
        t.operation_type = "tool_call".into();
        t.name = "execute_tool get_weather".into();
        t.status = SpanStatus::Completed;
        t.properties =
            Some(r#"{"gen_ai.tool.call.id":"call_1","gen_ai.tool.name":"get_weather"}"#.into());
        let attrs = attributes(&t, &|_| None);
        let get = |k: &str| attrs.iter().find(|a| a.0 == k).map(|a| a.1.clone());
        assert_eq!(
            get("gen_ai.operation.name"),
            Some(Value::Str("execute_tool".into()))
        );
        assert_eq!(
            get("gen_ai.tool.name"),
            Some(Value::Str("get_weather".into()))
        );
        assert_eq!(
            get("gen_ai.tool.call.id"),
            Some(Value::Str("call_1".into()))
        );
        assert_eq!(get("llmtap.property.gen_ai.tool.name"), None);
        assert_eq!(get("gen_ai.request.model"), None);
        let mut bad = sample();
        bad.trace_id = "xyz".into();
        let mut out = Vec::new();
        let skipped = encode_request(&[t, bad], &Resource::default(), &|_| None, &mut out);
        assert_eq!(skipped, 1);
        let ss = one(&one(&out, 1), 2);
        let spans: Vec<_> = fields(&ss).into_iter().filter(|f| f.0 == 2).collect();
        assert_eq!(spans.len(), 1);
        assert_eq!(u64_of(&one(&spans[0].2, 6)), KIND_INTERNAL);
        assert!(
            fields(&spans[0].2).iter().all(|f| f.0 != 15),
            "no error status"
        );
    }
}
