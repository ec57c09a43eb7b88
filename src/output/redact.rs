//! Redaction: key-shaped strings removed from what is recorded.
//!
//! Owns the compiled `[tracing] redact_patterns` and their application to
//! a span's free-text fields (captured bodies, error message, properties,
//! ids taken from headers, response id), plus literal removal of the
//! request's own header credentials, before the span is stored or exported. It runs
//! once per span ([`Redactor::redact_output`]), in the batcher's fan-out on a
//! blocking thread, never on the request path; the store and the exporter
//! share the redacted span.
//!
//! Each pattern is a regular expression (Rust `regex` syntax). Where it
//! matches, the text of its first capture group is replaced by
//! [`REDACTED`]; a pattern without groups has its whole match replaced.
//! So `\bsk-[A-Za-z0-9_\-]{8,}` removes a whole key, while
//! `(?i)\bBearer\s+([A-Za-z0-9._~+/=\-]{8,})` keeps the word `Bearer`.
//!
//! Must never: run on the request path, or store the text it removed.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regex::{Regex, RegexSet};

use crate::record::span::schema;
use crate::record::span::Span;

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
    /// The literals one of which any match of any pattern contains (see
    /// [`required`]): a text without them is left alone at a fraction of
    /// the cost of running the set. `None` when a pattern has no such
    /// literals.
    prefilter: Option<Prefilter>,
    /// Spans that went through [`redact_output`](Self::redact_output),
    /// shared by every clone (so a second pass anywhere would show).
    passes: Arc<AtomicU64>,
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
        let prefilter = prefilter(&patterns);
        Ok(Redactor {
            patterns,
            any,
            prefilter,
            passes: Arc::default(),
        })
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
        if self.prefilter.as_ref().is_some_and(|p| !p.may_match(text)) {
            return out;
        }
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

    /// The one pass a span takes before any output sees it: the request's
    /// own credentials (`literals`) removed literally, then the patterns.
    /// Counted in [`passes`](Self::passes).
    pub fn redact_output(&self, span: &mut Span, literals: &[String]) {
        redact_literals(span, literals);
        self.redact_span(span);
        self.passes.fetch_add(1, Ordering::Relaxed);
    }

    /// Spans redacted by [`redact_output`](Self::redact_output), by this
    /// redactor or any of its clones.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Redacts every free-text field of `span` that could carry a secret.
    pub fn redact_span(&self, span: &mut Span) {
        if self.is_empty() {
            return;
        }
        text_fields(span, |field| self.redact_string(field));
    }
}

/// The search for every literal some pattern requires; `None` when one
/// pattern requires none (then every text goes through the patterns).
fn prefilter(patterns: &[Regex]) -> Option<Prefilter> {
    let mut literals = Vec::new();
    for re in patterns {
        literals.extend(required::strings(re.as_str())?);
    }
    Prefilter::new(literals)
}

/// Searches a text for the [`required`] literals, ignoring ASCII case.
///
/// The text is lowercased a window at a time into a per-thread buffer and
/// searched case-sensitively for the lowercased literals: that lets the
/// SIMD searcher (Teddy) take the literals, which it cannot do with
/// case-insensitive matching, and costs no allocation once warm.
///
/// Literals with a non-ASCII character are not searched for: a text that
/// contains one of their non-ASCII characters at all goes to the patterns.
/// (Unicode case folding gives `(?i)k` the Kelvin sign and `(?i)s` the long
/// s, which would otherwise triple the literals of the default patterns.)
#[derive(Debug, Clone)]
struct Prefilter {
    finder: Finder,
    /// The non-ASCII characters of the literals left out.
    non_ascii: Vec<char>,
    /// Bytes the windows overlap by (the longest literal, less one), so a
    /// literal across a window's end is still seen whole.
    overlap: usize,
}

#[derive(Debug, Clone)]
enum Finder {
    /// Teddy, for up to 128 literals.
    Packed(aho_corasick::packed::Searcher),
    /// More literals than that.
    Automaton(aho_corasick::AhoCorasick),
}

/// Text lowercased and searched per window.
const WINDOW: usize = 4096;
/// Longest literal the windows allow for (longer: no prefilter).
const MAX_LITERAL: usize = 256;

impl Prefilter {
    fn new(all: Vec<Vec<u8>>) -> Option<Prefilter> {
        let mut literals = Vec::new();
        let mut non_ascii: Vec<char> = Vec::new();
        for lit in all {
            if lit.is_ascii() {
                literals.push(lit);
                continue;
            }
            // Literals come from patterns, which are UTF-8.
            let text = String::from_utf8(lit).ok()?;
            for c in text.chars().filter(|c| !c.is_ascii()) {
                if !non_ascii.contains(&c) {
                    non_ascii.push(c);
                }
            }
        }
        let longest = literals.iter().map(Vec::len).max().unwrap_or(0);
        if longest > MAX_LITERAL {
            return None;
        }
        let finder = match aho_corasick::packed::Config::new()
            .builder()
            .extend(&literals)
            .build()
        {
            Some(s) => Finder::Packed(s),
            None => Finder::Automaton(aho_corasick::AhoCorasick::new(&literals).ok()?),
        };
        Some(Prefilter {
            finder,
            non_ascii,
            overlap: longest.saturating_sub(1),
        })
    }

    /// False when no literal occurs in `text`: no pattern can match it.
    fn may_match(&self, text: &str) -> bool {
        if !self.non_ascii.is_empty()
            && !text.is_ascii()
            && self.non_ascii.iter().any(|&c| text.contains(c))
        {
            return true;
        }
        let text = text.as_bytes();
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            let mut start = 0;
            while start < text.len() {
                let end = (start + WINDOW + self.overlap).min(text.len());
                buf.clear();
                buf.extend_from_slice(&text[start..end]);
                buf.make_ascii_lowercase();
                let found = match &self.finder {
                    Finder::Packed(s) => s.find(buf.as_slice()).is_some(),
                    Finder::Automaton(a) => a.is_match(buf.as_slice()),
                };
                if found {
                    return true;
                }
                if end == text.len() {
                    break;
                }
                start += WINDOW;
            }
            false
        })
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
    text_fields(span, fix);
}

/// Calls `f` on every free-text field of a span that could carry a secret
/// (the schema's columns marked `redact`) and is not NULL.
fn text_fields(span: &mut Span, mut f: impl FnMut(&mut String)) {
    schema::for_each_text(span, |c, t| {
        if c.redact {
            f(t);
        }
    });
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

/// Literals that every match of a pattern must contain, searched for all
/// at once before any regular expression runs (`Redactor::redact`).
///
/// The regex engine's own prefilter for the set only looks at how matches
/// *start*, so the JSON-field pattern (`"api_key": "..."`) made it stop at
/// every `"` of a JSON body and try the pattern there. Here each pattern
/// is reduced to a finite set of strings one of which any match contains
/// (for that pattern the quoted field names, `"token"` but not
/// `"max_tokens"`), and a text none of them occurs in is left alone
/// without running the patterns.
///
/// The reduction over-approximates and never under-approximates: letters
/// are compared ASCII-case-insensitively (a case-sensitive pattern only
/// makes the search fire more often), and a pattern it cannot reduce (a
/// required part that is a large class or an open repetition everywhere,
/// such as `\d{16}`) turns the prefilter off for all patterns.
mod required {
    use regex_syntax::hir::{Class, Hir, HirKind};

    /// A finite set of byte strings, ASCII letters lowercased.
    type Lang = Vec<Vec<u8>>;

    /// Most strings a sub-expression's exact language may expand to.
    const MAX_LANG: usize = 256;
    /// Most distinct characters (after ASCII case folding) of a class
    /// expanded into its members.
    const MAX_CLASS: usize = 8;

    /// Strings, compared ASCII-case-insensitively, of which every match of
    /// `pattern` contains at least one; `None` when none can be given.
    pub fn strings(pattern: &str) -> Option<Vec<Vec<u8>>> {
        let hir = regex_syntax::parse(pattern).ok()?;
        required(&hir)
    }

    /// The strings `h` matches, when they are few.
    fn exact(h: &Hir) -> Option<Lang> {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => Some(vec![Vec::new()]),
            HirKind::Literal(l) => Some(vec![l.0.to_ascii_lowercase()]),
            HirKind::Class(Class::Unicode(c)) => atoms(c.ranges().iter().flat_map(|r| {
                (r.start()..=r.end()).map(|ch| {
                    let mut buf = [0u8; 4];
                    ch.encode_utf8(&mut buf).as_bytes().to_vec()
                })
            })),
            HirKind::Class(Class::Bytes(c)) => atoms(
                c.ranges()
                    .iter()
                    .flat_map(|r| (r.start()..=r.end()).map(|b| vec![b])),
            ),
            HirKind::Capture(c) => exact(&c.sub),
            HirKind::Repetition(r) => {
                let sub = exact(&r.sub)?;
                let max = r.max?;
                if max > 3 {
                    return None;
                }
                // sub{min,max}: the union over every count in between.
                let mut out: Lang = Vec::new();
                let mut power: Lang = vec![Vec::new()];
                for n in 0..=max {
                    if n >= r.min {
                        union_into(&mut out, &power)?;
                    }
                    if n < max {
                        power = product(&power, &sub)?;
                    }
                }
                Some(out)
            }
            HirKind::Concat(subs) => {
                let mut out: Lang = vec![Vec::new()];
                for s in subs {
                    out = product(&out, &exact(s)?)?;
                }
                Some(out)
            }
            HirKind::Alternation(subs) => {
                let mut out: Lang = Vec::new();
                for s in subs {
                    union_into(&mut out, &exact(s)?)?;
                }
                Some(out)
            }
        }
    }

    /// A class's members (ASCII letters lowercased) as one-character
    /// strings, when there are at most [`MAX_CLASS`] of them; stops reading
    /// a large class at the first member past that.
    fn atoms(members: impl Iterator<Item = Vec<u8>>) -> Option<Lang> {
        let mut out: Lang = Vec::new();
        for mut atom in members {
            atom.make_ascii_lowercase();
            if !out.contains(&atom) {
                out.push(atom);
                if out.len() > MAX_CLASS {
                    return None;
                }
            }
        }
        Some(out)
    }

    /// Strings one of which every match of `h` contains (none empty).
    fn required(h: &Hir) -> Option<Lang> {
        if let Some(lang) = exact(h) {
            if lang.iter().all(|s| !s.is_empty()) {
                return Some(lang);
            }
        }
        match h.kind() {
            HirKind::Capture(c) => required(&c.sub),
            HirKind::Repetition(r) if r.min >= 1 => required(&r.sub),
            HirKind::Alternation(subs) => {
                let mut out: Lang = Vec::new();
                for s in subs {
                    union_into(&mut out, &required(s)?)?;
                }
                Some(out)
            }
            HirKind::Concat(subs) => {
                // A match contains a match of every child, and of every run
                // of consecutive children: the best candidate wins.
                let langs: Vec<Option<Lang>> = subs.iter().map(exact).collect();
                let mut best: Option<Lang> = None;
                let mut consider = |cand: Lang| {
                    if cand.is_empty() || cand.iter().any(Vec::is_empty) {
                        return;
                    }
                    if best.as_ref().is_none_or(|b| score(&cand) > score(b)) {
                        best = Some(cand);
                    }
                };
                for i in 0..subs.len() {
                    let mut run: Lang = vec![Vec::new()];
                    for lang in &langs[i..] {
                        let Some(next) = lang.as_ref().and_then(|l| product(&run, l)) else {
                            break;
                        };
                        run = next;
                        consider(run.clone());
                    }
                    if langs[i].is_none() {
                        if let Some(r) = required(&subs[i]) {
                            consider(r);
                        }
                    }
                }
                best
            }
            _ => None,
        }
    }

    /// Longer shortest string first (rarer in text), then fewer strings.
    fn score(lang: &Lang) -> (usize, std::cmp::Reverse<usize>) {
        let shortest = lang.iter().map(Vec::len).min().unwrap_or(0);
        (shortest, std::cmp::Reverse(lang.len()))
    }

    fn product(a: &Lang, b: &Lang) -> Option<Lang> {
        if a.len().saturating_mul(b.len()) > MAX_LANG {
            return None;
        }
        let mut out: Lang = Vec::with_capacity(a.len() * b.len());
        for x in a {
            for y in b {
                let s = [x.as_slice(), y.as_slice()].concat();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        Some(out)
    }

    fn union_into(out: &mut Lang, more: &Lang) -> Option<()> {
        for s in more {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        (out.len() <= MAX_LANG).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = required::strings(pattern)
            .unwrap_or_else(|| panic!("{pattern}: no required strings"))
            .into_iter()
            .map(|s| String::from_utf8(s).unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn required_strings_of_the_default_patterns() {
        assert_eq!(lits(DEFAULT_PATTERNS[0]), ["sk-"]);
        assert_eq!(lits(DEFAULT_PATTERNS[1]), ["aiza"]);
        // Case-insensitive: one lowercase string, compared ignoring ASCII
        // case; `\s+` cannot be expanded and ends the run.
        assert_eq!(lits(DEFAULT_PATTERNS[5]), ["bearer"]);
        // The JSON field pattern: its quoted names, not a lone `"`.
        let json = lits(DEFAULT_PATTERNS[6]);
        for name in ["\"token\"", "\"api_key\"", "\"apikey\"", "\"x-api_key\""] {
            assert!(json.contains(&name.to_string()), "{name} not in {json:?}");
        }
        assert!(
            json.iter().all(|s| s.starts_with('"') && s.ends_with('"')),
            "{json:?}"
        );
        // Unicode case folding: `(?i)k` also matches the Kelvin sign, so
        // a field spelled with it must still be searched for.
        assert!(json.contains(&"\"api_\u{212A}ey\"".to_string()), "{json:?}");
        let query = lits(DEFAULT_PATTERNS[7]);
        assert!(query.contains(&"?key=".to_string()) && query.contains(&"&api-key=".to_string()));
        assert!(Redactor::defaults().prefilter.is_some());
    }

    #[test]
    fn ordinary_json_is_left_alone_by_the_prefilter_alone() {
        let r = Redactor::defaults();
        let pf = r.prefilter.as_ref().unwrap();
        assert!(matches!(pf.finder, Finder::Packed(_)));
        for text in [
            r#"{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            "/v1/chat/completions",
        ] {
            assert!(!pf.may_match(text), "{text}");
        }
        // ... but it fires on what a pattern could match.
        for text in [
            r#"{"Token": "x"}"#,
            "Authorization: BEARER abcdefgh",
            "GET /x?KEY=1",
            "sk-abc",
        ] {
            assert!(pf.may_match(text), "{text}");
        }
    }

    #[test]
    fn a_secret_across_a_window_boundary_is_still_redacted() {
        let r = Redactor::defaults();
        for secret in [
            r#""Client_Secret": "abc""#,
            "?access-token=abc",
            "sk-proj-abcdefgh",
        ] {
            for at in WINDOW - secret.len()..=WINDOW + 1 {
                for windows in [1, 2] {
                    let offset = at + (windows - 1) * WINDOW;
                    let text = format!(
                        "{}{secret} tail",
                        "x ".repeat(offset / 2) + &" ".repeat(offset % 2)
                    );
                    assert_eq!(text.find(secret), Some(offset));
                    assert!(
                        r.redact(&text).contains(REDACTED),
                        "{secret} at {offset} not redacted"
                    );
                }
            }
        }
    }

    #[test]
    fn a_pattern_without_required_literals_turns_the_prefilter_off() {
        let r = Redactor::new(&[r"\bsk-[a-z]{8,}", r"\b\d{16}\b"]).unwrap();
        assert!(r.prefilter.is_none());
        assert_eq!(r.redact("card 4111111111111111 ok"), "card [REDACTED] ok");
        assert_eq!(r.redact("key sk-abcdefghij"), "key [REDACTED]");
    }

    /// Patterns of many shapes, for the prefilter's soundness check.
    const SHAPES: &[&str] = &[
        r"(?i)secret[0-9]{2}",
        r"ab(c|d)?e+",
        r"x{2,3}y",
        r"(?i)(?:to|ke)[_-]?n",
        r"\bAKIA[0-9A-Z]{4}",
        r"(?-u:\x41)[bB]\x{212A}",
        r"q(?:r|s{1,2})t",
        r"(?i)ſ[a-c]",
    ];

    /// Built once: compiling the sets costs more than a case.
    static REDACTORS: std::sync::LazyLock<[Redactor; 2]> = std::sync::LazyLock::new(|| {
        [
            Redactor::new(DEFAULT_PATTERNS).unwrap(),
            Redactor::new(SHAPES).unwrap(),
        ]
    });

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Whenever a pattern matches a text, the prefilter finds one of
        /// its literals there: the prefilter never skips a secret.
        #[test]
        fn the_prefilter_never_skips_a_match(parts in proptest::collection::vec(0usize..40, 0..14)) {
            const FRAGS: &[&str] = &[
                "sk-", "SK-", "abcdefgh12", "AIza", "0123456789abcdef", "xai-", "gsk_", "hf_",
                "Bearer", "bEaReR", " ", "\t", "\"", ":", "api", "_", "-", "key", "KEY",
                "\u{212A}", "ey", "token", "Token", "secret", "ſ", "password", "?", "&", "=",
                "x", "y", "e", "c", "q", "s", "t", "AKIA", "K", "A", "b",
            ];
            let text: String = parts.iter().map(|&i| FRAGS[i]).collect();
            for r in REDACTORS.iter() {
                let pf = r.prefilter.as_ref().expect("every pattern here has literals");
                for re in &r.patterns {
                    if re.is_match(&text) {
                        proptest::prop_assert!(pf.may_match(&text), "{} matches {:?}", re.as_str(), text);
                    }
                }
            }
        }
    }

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
