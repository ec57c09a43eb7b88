//! Redaction: key-shaped strings removed from what is recorded.
//!
//! Owns the compiled `[tracing] redact_patterns` and their application to
//! a span's free-text fields (captured bodies, error message, properties,
//! ids taken from headers, response id), plus literal removal of the
//! request's own header credentials, before the span is stored or exported. It runs in
//! the batcher, on a blocking thread, never on the request path.
//!
//! Each pattern is a regular expression (Rust `regex` syntax). Where it
//! matches, the text of its first capture group is replaced by
//! [`REDACTED`]; a pattern without groups has its whole match replaced.
//! So `\bsk-[A-Za-z0-9_\-]{8,}` removes a whole key, while
//! `(?i)\bBearer\s+([A-Za-z0-9._~+/=\-]{8,})` keeps the word `Bearer`.
//!
//! Must never: run on the request path, or store the text it removed.

use std::borrow::Cow;

use regex::{Regex, RegexSet};

use crate::span::Span;

/// What replaces a redacted secret.
pub const REDACTED: &str = "[REDACTED]";

/// The default patterns (also shown in `config/llmtap.toml`).
pub const DEFAULT_PATTERNS: &[&str] = &[
    // OpenAI (sk-, sk-proj-, sk-svcacct-, sk-admin-) and Anthropic (sk-ant-).
    r"\bsk-[A-Za-z0-9_\-]{8,}",
    // Google / Gemini API keys.
    r"\bAIza[A-Za-z0-9_\-]{16,}",
    // xAI.
    r"\bxai-[A-Za-z0-9_\-]{8,}",
    // Groq.
    r"\bgsk_[A-Za-z0-9]{8,}",
    // Hugging Face.
    r"\bhf_[A-Za-z0-9]{16,}",
    // An Authorization value in text: keep "Bearer", drop the credential.
    r"(?i)\bBearer\s+([A-Za-z0-9._~+/=\-]{8,})",
    // The value of a JSON field that holds a credential.
    r#"(?i)"(?:api[_-]?key|x[_-]api[_-]key|access[_-]?token|refresh[_-]?token|id[_-]?token|token|secret|client[_-]?secret|password|passwd|authorization)"\s*:\s*"((?:[^"\\]|\\.)*)""#,
    // A credential in a query string or form: ?key=, &api-key=, ?token=...
    r"(?i)[?&](?:key|api[_-]?key|token|access[_-]?token|auth|sig|signature)=([^&\s#]+)",
];

/// A pattern that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("pattern {index} ({pattern:?}): {message}")]
pub struct PatternError {
    pub index: usize,
    pub pattern: String,
    pub message: String,
}

/// The compiled patterns. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<Regex>,
    /// All the patterns at once: one pass over a text tells whether any
    /// matches (almost never), instead of one pass per pattern. `None`
    /// when the set would not build (the patterns still work one by one).
    any: Option<RegexSet>,
}

impl Redactor {
    /// Compiles `patterns` in order.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Redactor, PatternError> {
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let p = p.as_ref();
                if p.is_empty() {
                    return Err(PatternError {
                        index,
                        pattern: p.to_string(),
                        message: "empty pattern".into(),
                    });
                }
                let re = Regex::new(p).map_err(|e| PatternError {
                    index,
                    pattern: p.to_string(),
                    message: e.to_string(),
                })?;
                if re.is_match("") {
                    return Err(PatternError {
                        index,
                        pattern: p.to_string(),
                        message: "matches the empty string".into(),
                    });
                }
                Ok(re)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let any = RegexSet::new(patterns.iter().map(Regex::as_str)).ok();
        Ok(Redactor { patterns, any })
    }

    /// The default patterns.
    pub fn defaults() -> Redactor {
        // The defaults are constants covered by `defaults_compile` below.
        Redactor::new(DEFAULT_PATTERNS).unwrap_or_default()
    }

    /// True when there is nothing to redact with.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every match redacted; borrowed when nothing matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        // No pattern matches the text as given: nothing to replace (the
        // loop below could find a match only after a replacement).
        if self.any.as_ref().is_some_and(|set| !set.is_match(text)) {
            return out;
        }
        for re in &self.patterns {
            if !re.is_match(&out) {
                continue;
            }
            let replaced = replace(re, &out);
            out = Cow::Owned(replaced);
        }
        out
    }

    /// Redacts `s` in place.
    pub fn redact_string(&self, s: &mut String) {
        if let Cow::Owned(new) = self.redact(s) {
            *s = new;
        }
    }

    /// Redacts every free-text field of `span` that could carry a secret.
    pub fn redact_span(&self, span: &mut Span) {
        if self.is_empty() {
            return;
        }
        for field in text_fields(span) {
            self.redact_string(field);
        }
    }
}

/// Shortest credential value removed literally (shorter ones would turn
/// ordinary words into `[REDACTED]`).
pub const MIN_LITERAL_LEN: usize = 8;

/// The credentials a request carries in its headers (`Authorization`
/// without its scheme, `x-api-key`, `api-key`, `x-goog-api-key`), at least
/// [`MIN_LITERAL_LEN`] bytes long: they are removed literally from the span,
/// whatever their shape (an Azure key is 32 hex digits, which no pattern
/// could tell from an id).
pub fn header_secrets(headers: &http::HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for name in [
        "authorization",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-goog-api-key",
    ] {
        for value in headers.get_all(name) {
            let Ok(v) = value.to_str() else { continue };
            let v = v.trim();
            // "Bearer KEY", "Basic ...": the credential is the last word.
            let v = v.rsplit(' ').next().unwrap_or(v).trim();
            if v.len() >= MIN_LITERAL_LEN && !out.iter().any(|o: &String| o == v) {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// Replaces every occurrence of each of `literals` in the span's text
/// fields with [`REDACTED`].
pub fn redact_literals(span: &mut Span, literals: &[String]) {
    if literals.is_empty() {
        return;
    }
    let fix = |s: &mut String| {
        for lit in literals {
            if s.contains(lit.as_str()) {
                *s = s.replace(lit.as_str(), REDACTED);
            }
        }
    };
    for field in text_fields(span) {
        fix(field);
    }
}

/// Every free-text field of a span that could carry a secret.
fn text_fields(span: &mut Span) -> impl Iterator<Item = &mut String> {
    [
        &mut span.request_body,
        &mut span.response_body,
        &mut span.error_message,
        &mut span.properties,
        &mut span.session_id,
        &mut span.user_id,
        &mut span.conversation_id,
        &mut span.response_id,
    ]
    .into_iter()
    .flatten()
    .chain(std::iter::once(&mut span.path))
}

/// Replaces group 1 of each match (the whole match when there is none).
fn replace(re: &Regex, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let Some(whole) = caps.get(0) else { continue };
        let target = caps.get(1).unwrap_or(whole);
        out.push_str(&text[last..target.start()]);
        out.push_str(REDACTED);
        last = target.end();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_compile() {
        let r = Redactor::new(DEFAULT_PATTERNS).unwrap();
        assert_eq!(r.patterns.len(), DEFAULT_PATTERNS.len());
        assert_eq!(Redactor::defaults().patterns.len(), DEFAULT_PATTERNS.len());
    }

    #[test]
    fn removes_key_shapes() {
        let r = Redactor::defaults();
        let cases = [
            (
                "my key is sk-proj-AbC123xyz_-789 ok",
                "my key is [REDACTED] ok",
            ),
            ("sk-ant-api03-abcdefghijkl", "[REDACTED]"),
            ("k=AIzaSyA1234567890abcdefghijk", "k=[REDACTED]"),
            ("xai-abcdefgh1234 gsk_ABCDEFGH1234", "[REDACTED] [REDACTED]"),
            (
                "Authorization: Bearer abc.def-ghi_jkl",
                "Authorization: Bearer [REDACTED]",
            ),
            (
                r#"{"api_key": "hunter2", "password":"p\"w", "model":"gpt-4o"}"#,
                r#"{"api_key": "[REDACTED]", "password":"[REDACTED]", "model":"gpt-4o"}"#,
            ),
            (
                r#"{"apiKey":"x","token":"t","max_tokens":5}"#,
                r#"{"apiKey":"[REDACTED]","token":"[REDACTED]","max_tokens":5}"#,
            ),
            (
                "GET /v1beta/models?key=abc123&alt=sse",
                "GET /v1beta/models?key=[REDACTED]&alt=sse",
            ),
            ("https://x/y?api-key=zzz", "https://x/y?api-key=[REDACTED]"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact(input), want, "{input}");
        }
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let r = Redactor::defaults();
        for text in [
            "task-list is short",
            "scikit sk-learn works",
            r#"{"max_tokens":100,"tokens":3}"#,
            "the bearer of bad news",
        ] {
            assert!(matches!(r.redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = Redactor::new(&["sk-[a-z]+", "(unclosed"]).unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.to_string().contains("(unclosed"), "{err}");
        let err = Redactor::new(&["a*"]).unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
    }

    #[test]
    fn redacts_every_text_field_of_a_span() {
        let r = Redactor::defaults();
        let azure = "0123456789abcdef0123456789abcdef";
        let mut h = http::HeaderMap::new();
        h.insert("api-key", http::HeaderValue::from_static(azure));
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer short"),
        );
        assert_eq!(header_secrets(&h), vec![azure.to_string()]);
        let key = "sk-test-0123456789abcdef";
        let mut s = Span::start(0);
        s.request_body = Some(format!("{{\"content\":\"{key}\"}}"));
        s.response_body = Some(key.into());
        s.error_message = Some(format!("Incorrect API key provided: {key}"));
        s.properties = Some(format!("{{\"note\":\"{key}\"}}"));
        s.user_id = Some(key.into());
        s.session_id = Some(key.into());
        s.conversation_id = Some(key.into());
        s.response_id = Some(format!("chatcmpl-{azure}"));
        redact_literals(&mut s, &header_secrets(&h));
        r.redact_span(&mut s);
        let all = format!("{s:?}");
        assert!(!all.contains(key), "{all}");
        assert!(!all.contains(azure), "{all}");
        assert_eq!(s.response_id.as_deref(), Some("chatcmpl-[REDACTED]"));
    }
}
