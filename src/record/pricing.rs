//! Model prices: the shipped price table, user overrides, model-name
//! matching and the cost of one call.
//!
//! Owns `config/pricing.toml` (compiled in with `include_str!`), the
//! optional user price file that adds or replaces models, the rules that
//! map a model name as a provider reports it (`openai/gpt-4o-2024-08-06`,
//! `models/gemini-2.0-flash-001`, `Claude-Sonnet-4-5-20250929`) to a
//! configured key, and the cost formula for a set of token counts.
//!
//! This module never touches the network, the store or request bodies,
//! never panics on a lookup, and never guesses: a model it cannot match
//! has no cost (`None`), not a default price. Prices are plain per-token
//! list prices; batch discounts, long-context tiers, 1-hour cache writes,
//! cache storage and non-text modalities are out of scope.
//!
//! Token semantics follow the OpenTelemetry GenAI conventions: `input` is
//! the total input count, of which `cached_input` and `cache_write` are
//! parts; `output` is the total output count, of which `reasoning` is a
//! part.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The price table shipped with llmtap.
const SHIPPED: &str = include_str!("../../config/pricing.toml");
/// The name used for the shipped table in error messages.
const SHIPPED_SOURCE: &str = "config/pricing.toml (built in)";
/// The fields of a `[models."NAME"]` table.
const PRICE_FIELDS: [&str; 5] = [
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
];

/// Everything that can go wrong while loading a price table.
#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    /// The user price file could not be read.
    #[error("cannot read pricing file {path}: {source}")]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape.
    #[error("invalid pricing file {file}{}: {message}", key_suffix(.key))]
    Parse {
        /// Where the text came from (a path, or the built-in table).
        file: String,
        /// The offending key (e.g. `models."gpt-4o"`), when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A value parsed but is not acceptable (negative or non-finite price,
    /// empty or duplicate model name, malformed `checked` date).
    #[error("invalid pricing file {file}: {key}: {message}")]
    Invalid {
        /// Where the text came from (a path, or the built-in table).
        file: String,
        /// The offending key (e.g. `models."gpt-4o".input`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map(|k| format!(": {k}")).unwrap_or_default()
}

/// Prices per million tokens for one model, in USD.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Uncached input tokens.
    pub input: f64,
    /// Output tokens (and reasoning tokens, unless `reasoning` is set).
    pub output: f64,
    /// Input tokens read from the provider's prompt cache; `input` if unset.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache; `input` if unset.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// Reasoning (thinking) output tokens; `output` if unset.
    #[serde(default)]
    pub reasoning: Option<f64>,
}

impl ModelPrice {
    /// Every price must be a finite number >= 0.
    fn validate(&self, file: &str, model: &str) -> Result<(), PricingError> {
        let fields = [
            ("input", Some(self.input)),
            ("output", Some(self.output)),
            ("cached_input", self.cached_input),
            ("cache_write", self.cache_write),
            ("reasoning", self.reasoning),
        ];
        for (field, value) in fields {
            if let Some(v) = value {
                if !v.is_finite() || v < 0.0 {
                    return Err(PricingError::Invalid {
                        file: file.to_string(),
                        key: format!("models.\"{model}\".{field}"),
                        message: format!(
                            "price must be a finite number >= 0 (USD per million tokens), got {v}"
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Token counts to price.
///
/// `input` is the TOTAL input count, including `cached_input` and
/// `cache_write`; `output` is the TOTAL output count, including
/// `reasoning` (OpenTelemetry GenAI conventions). Negative values count
/// as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Total input tokens (uncached + cached + cache-write).
    pub input: i64,
    /// Total output tokens (visible + reasoning).
    pub output: i64,
    /// The part of `input` read from the prompt cache.
    pub cached_input: i64,
    /// The part of `input` written to the prompt cache.
    pub cache_write: i64,
    /// The part of `output` spent on reasoning.
    pub reasoning: i64,
}

/// The on-disk shape of a price file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    #[serde(default)]
    checked: Option<String>,
    #[serde(default)]
    models: BTreeMap<String, toml::Table>,
}

/// One configured model.
#[derive(Debug, Clone)]
struct Entry {
    /// The key as written in the file.
    name: String,
    /// `name` lowercased, for matching.
    lower: String,
    price: ModelPrice,
}

/// A set of model prices with name matching.
///
/// Built once at start-up ([`PriceTable::load`]); lookups are read-only,
/// need no locking and allocate only for names with uppercase letters or,
/// as a last resort, for dotted names (`claude-3.5-sonnet`).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    checked: String,
    entries: Vec<Entry>,
    /// Lowercase key -> index into `entries`.
    index: HashMap<String, usize>,
    /// Indexes into `entries`, longest key first (for prefix matching).
    by_len: Vec<usize>,
}

impl PriceTable {
    /// The price table shipped with llmtap (`config/pricing.toml`).
    pub fn shipped() -> Result<PriceTable, PricingError> {
        Self::from_toml(SHIPPED, SHIPPED_SOURCE)
    }

    /// Parses a price file; `source` names it in error messages.
    ///
    /// The file has an optional top-level `checked = "YYYY-MM-DD"` and one
    /// `[models."NAME"]` table per model. Unknown keys, negative or
    /// non-finite prices and model names that differ only in case are
    /// errors that name the key.
    pub fn from_toml(text: &str, source: &str) -> Result<PriceTable, PricingError> {
        let file: PricingFile = toml::from_str(text).map_err(|e| parse_error(text, source, &e))?;

        let checked = file.checked.unwrap_or_default();
        if !checked.is_empty() && !is_iso_date(&checked) {
            return Err(PricingError::Invalid {
                file: source.to_string(),
                key: "checked".to_string(),
                message: format!("expected a date as YYYY-MM-DD, got {checked:?}"),
            });
        }

        let mut table = PriceTable {
            checked,
            ..PriceTable::default()
        };
        for (name, body) in file.models {
            let key = format!("models.\"{name}\"");
            if name.trim().is_empty() {
                return Err(PricingError::Invalid {
                    file: source.to_string(),
                    key,
                    message: "model name is empty".to_string(),
                });
            }
            // serde's type errors do not say which field; name it here.
            for (field, value) in &body {
                let known = PRICE_FIELDS.contains(&field.as_str());
                if known && !matches!(value, toml::Value::Integer(_) | toml::Value::Float(_)) {
                    return Err(PricingError::Parse {
                        file: source.to_string(),
                        key: Some(format!("{key}.{field}")),
                        message: format!(
                            "expected a price in USD per million tokens, got a {}",
                            value.type_str()
                        ),
                    });
                }
            }
            let price: ModelPrice =
                body.try_into()
                    .map_err(|e: toml::de::Error| PricingError::Parse {
                        file: source.to_string(),
                        key: Some(key.clone()),
                        message: e.message().trim().to_string(),
                    })?;
            price.validate(source, &name)?;
            let lower = name.trim().to_lowercase();
            if let Some(&other) = table.index.get(&lower) {
                return Err(PricingError::Invalid {
                    file: source.to_string(),
                    key,
                    message: format!(
                        "duplicate model name (names are case-insensitive): also defined as {:?}",
                        table.entries[other].name
                    ),
                });
            }
            table.index.insert(lower.clone(), table.entries.len());
            table.entries.push(Entry { name, lower, price });
        }
        table.rebuild_order();
        Ok(table)
    }

    /// Applies a user price file: adds its models and replaces same-named
    /// (case-insensitive) ones. `checked` keeps the shipped date unless
    /// this table has none.
    pub fn merge(&mut self, overrides: PriceTable) {
        if self.checked.is_empty() {
            self.checked = overrides.checked;
        }
        for entry in overrides.entries {
            match self.index.get(&entry.lower) {
                Some(&i) => self.entries[i] = entry,
                None => {
                    self.index.insert(entry.lower.clone(), self.entries.len());
                    self.entries.push(entry);
                }
            }
        }
        self.rebuild_order();
    }

    /// The shipped prices plus, if given, the user's price file on top.
    pub fn load(user_file: Option<&Path>) -> Result<PriceTable, PricingError> {
        let mut table = Self::shipped()?;
        if let Some(path) = user_file {
            let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let overrides = Self::from_toml(&text, &path.display().to_string())?;
            tracing::debug!(
                file = %path.display(),
                models = overrides.len(),
                "Loaded price overrides"
            );
            table.merge(overrides);
        }
        Ok(table)
    }

    /// Finds the price for a model name as a provider reports it; returns
    /// the matched key (as configured) and its price.
    ///
    /// Matching is case-insensitive and ignores a provider prefix
    /// (`openai/`, `anthropic/`, `models/`: everything up to the last `/`).
    /// In order:
    /// 1. the exact name;
    /// 2. the name without date or version suffixes (`-2024-08-06`,
    ///    `-20250929`, `-2411`, `-001`, `-latest`, `@20241022`, a zero
    ///    minor version `-0`), stripped one at a time;
    /// 3. the longest configured key that is a prefix of the name at a
    ///    `-`, `.`, `:` or `/` boundary, unless a digit follows the
    ///    boundary: that continues a version number, so `claude-opus-4`
    ///    never prices `claude-opus-4-7` and `gpt-5` never prices `gpt-5.6`.
    ///
    /// If the name has dots and steps 1-2 fail, they are retried with dots
    /// read as dashes (`claude-3.5-sonnet` as OpenRouter writes it finds
    /// `claude-3-5-sonnet`), and step 3 likewise after the name as given.
    pub fn lookup(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        let i = self.find(model)?;
        let entry = self.entries.get(i)?;
        Some((entry.name.as_str(), &entry.price))
    }

    /// The cost in USD of one call, or `None` when the model is unknown.
    ///
    /// ```text
    /// (input − cached_input − cache_write) × input price
    ///   + cached_input × (cached_input price, else input price)
    ///   + cache_write  × (cache_write price, else input price)
    ///   + (output − reasoning) × output price
    ///   + reasoning    × (reasoning price, else output price)
    /// ```
    ///
    /// all / 1e6, with negative counts and differences clamped at 0.
    pub fn cost(&self, model: &str, tokens: &TokenCounts) -> Option<f64> {
        let (_, price) = self.lookup(model)?;
        Some(price_tokens(price, tokens))
    }

    /// The date the shipped prices were checked (`YYYY-MM-DD`), or `""`
    /// if the table has none.
    pub fn checked(&self) -> &str {
        &self.checked
    }

    /// The number of models priced.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no model is priced.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn rebuild_order(&mut self) {
        let entries = &self.entries;
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| {
            entries[b]
                .lower
                .len()
                .cmp(&entries[a].lower.len())
                .then_with(|| entries[a].lower.cmp(&entries[b].lower))
        });
        self.by_len = order;
    }

    fn find(&self, model: &str) -> Option<usize> {
        let model = model.trim();
        if model.is_empty() || self.entries.is_empty() {
            return None;
        }
        let lower: Cow<'_, str> =
            if model.bytes().any(|b| b.is_ascii_uppercase()) || !model.is_ascii() {
                Cow::Owned(model.to_lowercase())
            } else {
                Cow::Borrowed(model)
            };
        let full: &str = &lower;
        // Without the provider prefix (OpenRouter, Gemini `models/`, Groq).
        let bare = match full.rsplit_once('/') {
            Some((_, rest)) if !rest.is_empty() => Some(rest),
            _ => None,
        };
        let base = bare.unwrap_or(full);

        // Steps 1 and 2: the full name first (a configured key may contain
        // a slash), then the bare one.
        if let Some(i) = self.exact_or_stripped(full) {
            return Some(i);
        }
        if let Some(i) = bare.and_then(|b| self.exact_or_stripped(b)) {
            return Some(i);
        }
        // Dotted versions written with dashes in the keys.
        let dashed = base.contains('.').then(|| base.replace('.', "-"));
        if let Some(i) = dashed.as_deref().and_then(|d| self.exact_or_stripped(d)) {
            return Some(i);
        }
        // Step 3.
        if bare.is_some() {
            if let Some(i) = self.longest_prefix(full) {
                return Some(i);
            }
        }
        if let Some(i) = self.longest_prefix(base) {
            return Some(i);
        }
        dashed.as_deref().and_then(|d| self.longest_prefix(d))
    }

    fn exact_or_stripped(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        let mut current = name;
        // A name carries at most a few stacked suffixes (`-0-20250514`).
        for _ in 0..4 {
            current = strip_version_suffix(current)?;
            if let Some(&i) = self.index.get(current) {
                return Some(i);
            }
        }
        None
    }

    fn longest_prefix(&self, name: &str) -> Option<usize> {
        let bytes = name.as_bytes();
        self.by_len.iter().copied().find(|&i| {
            let key = self.entries[i].lower.as_str();
            if key.len() > name.len() || !name.starts_with(key) {
                return false;
            }
            match bytes.get(key.len()) {
                None => true,
                Some(b) => {
                    matches!(b, b'-' | b'.' | b':' | b'/')
                        && !bytes.get(key.len() + 1).is_some_and(u8::is_ascii_digit)
                }
            }
        })
    }
}

/// The cost formula (see [`PriceTable::cost`]).
fn price_tokens(price: &ModelPrice, tokens: &TokenCounts) -> f64 {
    let input = tokens.input.max(0);
    let cached = tokens.cached_input.max(0);
    let cache_write = tokens.cache_write.max(0);
    let output = tokens.output.max(0);
    let reasoning = tokens.reasoning.max(0);
    let uncached = input
        .saturating_sub(cached)
        .saturating_sub(cache_write)
        .max(0);
    let visible = output.saturating_sub(reasoning).max(0);

    let micro_usd = uncached as f64 * price.input
        + cached as f64 * price.cached_input.unwrap_or(price.input)
        + cache_write as f64 * price.cache_write.unwrap_or(price.input)
        + visible as f64 * price.output
        + reasoning as f64 * price.reasoning.unwrap_or(price.output);
    micro_usd / 1e6
}

/// Removes one date or version suffix, if the name has one.
///
/// `mini`, `turbo`, `pro` and other words are never suffixes: only
/// `-latest`, `@anything` (Vertex AI), `-YYYY-MM-DD`, `-YYYYMMDD`, a dash
/// and 3 or 4 digits (`-2411`, `-0613`, `-001`) and a zero minor version
/// (`-0`, `.0`).
fn strip_version_suffix(name: &str) -> Option<&str> {
    let bytes = name.as_bytes();
    let n = bytes.len();
    let all_digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);

    let stripped = if let Some(rest) = name.strip_suffix("-latest") {
        rest
    } else if let Some((rest, _)) = name.rsplit_once('@') {
        rest
    } else if n > 11
        && bytes[n - 11] == b'-'
        && bytes[n - 6] == b'-'
        && bytes[n - 3] == b'-'
        && all_digits(n - 10..n - 6)
        && all_digits(n - 5..n - 3)
        && all_digits(n - 2..n)
    {
        &name[..n - 11]
    } else {
        // A dash followed by digits only.
        let digits = bytes
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let before = n.checked_sub(digits + 1).map(|i| bytes[i]);
        match (digits, before) {
            (8 | 4 | 3, Some(b'-')) => &name[..n - digits - 1],
            (1, Some(b'-' | b'.')) if bytes[n - 1] == b'0' => &name[..n - 2],
            _ => return None,
        }
    };
    (!stripped.is_empty()).then_some(stripped)
}

/// `YYYY-MM-DD` with plausible month and day numbers.
fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && digits(5..7) && digits(8..10)) {
        return false;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// A TOML error as a one-line message naming the line and, when the error
/// points at a key, the key.
fn parse_error(text: &str, source: &str, e: &toml::de::Error) -> PricingError {
    let mut message = e.message().trim().to_string();
    let mut key = None;
    if let Some(span) = e.span() {
        let start = span.start.min(text.len());
        let line = text.get(..start).map_or(0, |t| t.matches('\n').count()) + 1;
        message = format!("line {line}: {message}");
        // When the span covers a key (`name = ...`), name it.
        let end = span.end.min(text.len());
        let followed_by_equals = text
            .get(end..)
            .is_some_and(|rest| rest.trim_start_matches([' ', '\t']).starts_with('='));
        if let Some(s) = text.get(span).map(str::trim) {
            if followed_by_equals && !s.is_empty() && !s.contains(['\n', '=', '[']) {
                key = Some(s.to_string());
            }
        }
    }
    PricingError::Parse {
        file: source.to_string(),
        key,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    fn table(text: &str) -> PriceTable {
        PriceTable::from_toml(text, "test.toml").expect("test table parses")
    }

    /// A small table with the keys the matching examples need.
    fn sample() -> PriceTable {
        table(
            r#"
            checked = "2026-01-02"
            [models."gpt-4o"]
            input = 2.5
            output = 10.0
            cached_input = 1.25
            [models."gpt-4o-mini"]
            input = 0.15
            output = 0.6
            [models."gpt-5"]
            input = 1.25
            output = 10.0
            [models."claude-sonnet-4-5"]
            input = 3.0
            output = 15.0
            cached_input = 0.3
            cache_write = 3.75
            [models."claude-3-5-sonnet"]
            input = 3.0
            output = 15.0
            [models."claude-opus-4"]
            input = 15.0
            output = 75.0
            [models."mistral-large"]
            input = 2.0
            output = 6.0
            [models."gemini-2.0-flash"]
            input = 0.1
            output = 0.4
            [models."gemini-2.5-flash"]
            input = 0.3
            output = 2.5
            [models."gemini-2.5-flash-lite"]
            input = 0.1
            output = 0.4
            [models."o3"]
            input = 2.0
            output = 8.0
            "#,
        )
    }

    fn key(t: &PriceTable, model: &str) -> Option<String> {
        t.lookup(model).map(|(k, _)| k.to_string())
    }

    #[test]
    fn exact_match() {
        let t = sample();
        assert_eq!(key(&t, "gpt-4o").as_deref(), Some("gpt-4o"));
        assert_eq!(key(&t, "gpt-4o-mini").as_deref(), Some("gpt-4o-mini"));
        let (_, p) = t.lookup("gpt-4o").expect("gpt-4o priced");
        assert_eq!(p.input, 2.5);
        assert_eq!(p.cached_input, Some(1.25));
    }

    #[test]
    fn date_and_version_suffixes() {
        let t = sample();
        for (name, want) in [
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
            ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
            ("mistral-large-2411", "mistral-large"),
            ("mistral-large-latest", "mistral-large"),
            ("gemini-2.0-flash-001", "gemini-2.0-flash"),
            ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
            ("claude-opus-4-0", "claude-opus-4"),
            ("claude-opus-4-20250514", "claude-opus-4"),
            ("gpt-5-2025-08-07", "gpt-5"),
        ] {
            assert_eq!(key(&t, name).as_deref(), Some(want), "{name}");
        }
    }

    #[test]
    fn mini_is_not_a_version_suffix() {
        assert_eq!(strip_version_suffix("gpt-4o-mini"), None);
        assert_eq!(strip_version_suffix("o3-mini"), None);
        assert_eq!(strip_version_suffix("gpt-4-turbo"), None);
        assert_eq!(
            strip_version_suffix("gpt-4o-mini-2024-07-18"),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            strip_version_suffix("mistral-large-2411"),
            Some("mistral-large")
        );
        assert_eq!(
            strip_version_suffix("gemini-2.0-flash-001"),
            Some("gemini-2.0-flash")
        );
        assert_eq!(strip_version_suffix("claude-opus-4-1"), None);
        assert_eq!(strip_version_suffix("latest"), None);

        // With both keys present, gpt-4o-mini names are never priced as gpt-4o.
        let t = sample();
        assert_eq!(key(&t, "gpt-4o-mini").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(
            key(&t, "gpt-4o-mini-2024-07-18").as_deref(),
            Some("gpt-4o-mini")
        );
        let (_, p) = t.lookup("gpt-4o-mini-2024-07-18").expect("priced");
        assert_eq!(p.input, 0.15);
    }

    #[test]
    fn longest_prefix_at_a_boundary() {
        let t = sample();
        assert_eq!(
            key(&t, "gpt-4o-mini-search-preview").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            key(&t, "gpt-4o-mini-search-preview-2025-03-11").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(key(&t, "gpt-4o-search-preview").as_deref(), Some("gpt-4o"));
        assert_eq!(
            key(&t, "gemini-2.5-flash-lite-preview-09-2025").as_deref(),
            Some("gemini-2.5-flash-lite")
        );
        assert_eq!(
            key(&t, "gemini-2.5-flash-preview-05-20").as_deref(),
            Some("gemini-2.5-flash")
        );
        assert_eq!(key(&t, "o3-deep-research").as_deref(), Some("o3"));
        assert_eq!(
            key(&t, "claude-3-5-sonnet-v2@20241022").as_deref(),
            Some("claude-3-5-sonnet")
        );
        assert_eq!(key(&t, "gpt-5:thinking").as_deref(), Some("gpt-5"));
        // Not at a boundary.
        assert_eq!(key(&t, "gpt-4os"), None);
        assert_eq!(key(&t, "o3x-mini"), None);
        // A digit after the boundary continues the version number.
        assert_eq!(key(&t, "gpt-5.6-sol"), None);
        assert_eq!(key(&t, "claude-opus-4-7"), None);
        assert_eq!(key(&t, "claude-opus-4-7-20260101"), None);
    }

    #[test]
    fn case_insensitive_and_provider_prefixes() {
        let t = sample();
        for (name, want) in [
            ("GPT-4o", "gpt-4o"),
            ("  gpt-4o  ", "gpt-4o"),
            ("openai/gpt-4o", "gpt-4o"),
            ("OpenAI/GPT-4o-2024-08-06", "gpt-4o"),
            ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
            ("models/gemini-2.0-flash", "gemini-2.0-flash"),
            ("models/gemini-2.0-flash-001", "gemini-2.0-flash"),
            ("openrouter/openai/gpt-4o-mini", "gpt-4o-mini"),
            // OpenRouter writes Anthropic versions with dots.
            ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),
            ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ] {
            assert_eq!(key(&t, name).as_deref(), Some(want), "{name}");
        }
        // The configured spelling is returned, whatever the key's case.
        let t = table("[models.\"GPT-X\"]\ninput = 1\noutput = 2\n");
        assert_eq!(key(&t, "gpt-x").as_deref(), Some("GPT-X"));
        assert_eq!(key(&t, "Gpt-X-2025-01-01").as_deref(), Some("GPT-X"));
    }

    #[test]
    fn unknown_models_have_no_price() {
        let t = sample();
        for name in [
            "",
            "   ",
            "llama-3.3-70b-versatile",
            "gpt",
            "gpt-4",
            "openai/",
            "text-embedding-3-small",
        ] {
            assert!(t.lookup(name).is_none(), "{name:?}");
            assert!(t.cost(name, &TokenCounts::default()).is_none(), "{name:?}");
        }
        assert!(PriceTable::default().lookup("gpt-4o").is_none());
    }

    #[test]
    fn cost_with_cached_cache_write_and_reasoning() {
        let t = table(
            r#"
            [models.m]
            input = 2.0
            output = 8.0
            cached_input = 0.5
            cache_write = 2.5
            reasoning = 10.0
            "#,
        );
        let tokens = TokenCounts {
            input: 1000,
            output: 500,
            cached_input: 200,
            cache_write: 100,
            reasoning: 300,
        };
        // 700 × 2 + 200 × 0.5 + 100 × 2.5 + 200 × 8 + 300 × 10 = 6350
        let cost = t.cost("m", &tokens).expect("priced");
        assert!((cost - 6350.0 / 1e6).abs() < EPS, "{cost}");
    }

    #[test]
    fn cost_falls_back_to_input_and_output_prices() {
        let t = table("[models.m]\ninput = 2.0\noutput = 8.0\n");
        let tokens = TokenCounts {
            input: 1000,
            output: 500,
            cached_input: 200,
            cache_write: 100,
            reasoning: 300,
        };
        // Every input token at 2, every output token at 8.
        let cost = t.cost("m", &tokens).expect("priced");
        assert!(
            (cost - (1000.0 * 2.0 + 500.0 * 8.0) / 1e6).abs() < EPS,
            "{cost}"
        );
    }

    #[test]
    fn cost_clamps_negative_counts_and_differences() {
        let t = table(
            "[models.m]\ninput = 3.0\noutput = 15.0\ncached_input = 0.3\ncache_write = 3.75\n",
        );
        // More cached + written than total input (a provider that reports
        // input excluding cache tokens): uncached clamps at 0.
        let tokens = TokenCounts {
            input: 100,
            output: 10,
            cached_input: 1000,
            cache_write: 200,
            reasoning: 50,
        };
        let want = (1000.0 * 0.3 + 200.0 * 3.75 + 50.0 * 15.0) / 1e6;
        let cost = t.cost("m", &tokens).expect("priced");
        assert!((cost - want).abs() < EPS, "{cost} != {want}");

        let negative = TokenCounts {
            input: -5,
            output: -1,
            cached_input: -2,
            cache_write: -3,
            reasoning: -4,
        };
        assert_eq!(t.cost("m", &negative), Some(0.0));
        assert_eq!(t.cost("m", &TokenCounts::default()), Some(0.0));

        let huge = TokenCounts {
            input: i64::MAX,
            cached_input: i64::MIN,
            ..TokenCounts::default()
        };
        assert!(t.cost("m", &huge).is_some_and(f64::is_finite));
    }

    #[test]
    fn cost_of_an_anthropic_call_with_caching() {
        let t = sample();
        // 1000 fresh + 2000 cache reads + 500 cache writes = 3500 total input.
        let tokens = TokenCounts {
            input: 3500,
            output: 400,
            cached_input: 2000,
            cache_write: 500,
            reasoning: 0,
        };
        let want = (1000.0 * 3.0 + 2000.0 * 0.3 + 500.0 * 3.75 + 400.0 * 15.0) / 1e6;
        let cost = t
            .cost("claude-sonnet-4-5-20250929", &tokens)
            .expect("priced");
        assert!((cost - want).abs() < EPS, "{cost} != {want}");
    }

    #[test]
    fn merge_adds_and_replaces() {
        let mut t = sample();
        let before = t.len();
        let overrides = table(
            r#"
            checked = "2030-01-01"
            [models."GPT-4o"]
            input = 1.0
            output = 4.0
            [models."my-finetune"]
            input = 0.5
            output = 0.5
            "#,
        );
        t.merge(overrides);
        assert_eq!(t.len(), before + 1);
        assert_eq!(t.checked(), "2026-01-02", "the shipped date is kept");

        let (k, p) = t.lookup("gpt-4o-2024-08-06").expect("priced");
        assert_eq!(k, "GPT-4o");
        assert_eq!(p.input, 1.0);
        assert_eq!(p.cached_input, None, "the whole entry is replaced");
        assert_eq!(key(&t, "my-finetune").as_deref(), Some("my-finetune"));
        // The new key takes part in prefix matching too.
        assert_eq!(key(&t, "my-finetune-v2").as_deref(), Some("my-finetune"));
        // Untouched models keep their prices.
        assert_eq!(t.lookup("gpt-4o-mini").map(|(_, p)| p.input), Some(0.15));

        let mut empty = PriceTable::default();
        empty.merge(sample());
        assert_eq!(empty.checked(), "2026-01-02");
        assert_eq!(empty.len(), sample().len());
    }

    #[test]
    fn load_applies_a_user_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("prices.toml");
        std::fs::write(
            &path,
            "[models.\"gpt-4o\"]\ninput = 100.0\noutput = 200.0\n\n[models.\"acme-1\"]\ninput = 1\noutput = 2\n",
        )
        .expect("write");
        let shipped = PriceTable::shipped().expect("shipped table parses");
        let t = PriceTable::load(Some(&path)).expect("loads");
        assert_eq!(t.len(), shipped.len() + 1);
        assert_eq!(t.checked(), shipped.checked());
        assert_eq!(t.lookup("gpt-4o").map(|(_, p)| p.input), Some(100.0));
        assert_eq!(t.lookup("acme-1").map(|(_, p)| p.output), Some(2.0));

        assert_eq!(PriceTable::load(None).expect("loads").len(), shipped.len());

        let missing = dir.path().join("missing.toml");
        let err = PriceTable::load(Some(&missing)).expect_err("missing file");
        assert!(matches!(err, PricingError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.toml"), "{err}");

        std::fs::write(&path, "[models.\"bad\"]\ninput = -1\noutput = 1\n").expect("write");
        let err = PriceTable::load(Some(&path)).expect_err("negative price");
        let msg = err.to_string();
        assert!(
            msg.contains("prices.toml") && msg.contains("models.\"bad\".input"),
            "{msg}"
        );
    }

    #[test]
    fn invalid_files_name_the_key() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[models.\"gpt-x\"]\ninput = -1.0\noutput = 1.0\n",
                &["bad.toml", "models.\"gpt-x\".input", ">= 0"],
            ),
            (
                "[models.\"gpt-x\"]\ninput = 1.0\noutput = 1.0\ncached_input = nan\n",
                &["models.\"gpt-x\".cached_input", "finite"],
            ),
            (
                "[models.\"gpt-x\"]\ninput = 1.0\noutput = inf\n",
                &["models.\"gpt-x\".output"],
            ),
            (
                "[models.\"gpt-x\"]\ninput = 1.0\noutput = 2.0\ncache_read = 0.1\n",
                &["bad.toml", "models.\"gpt-x\"", "cache_read"],
            ),
            (
                "[models.\"gpt-x\"]\ninput = 1.0\n",
                &["models.\"gpt-x\"", "output"],
            ),
            (
                "[models.\"gpt-x\"]\ninput = \"cheap\"\noutput = 1.0\n",
                &["models.\"gpt-x\".input", "string"],
            ),
            (
                "[models.\"gpt-x\"]\ninput = 1\noutput = 1\nnote = \"hi\"\n",
                &["models.\"gpt-x\"", "unknown field", "note"],
            ),
            ("[models]\ngpt = 1\n", &["bad.toml", "line 2"]),
            ("currency = \"EUR\"\n", &["bad.toml", "currency", "line 1"]),
            ("checked = \"last week\"\n", &["checked", "YYYY-MM-DD"]),
            (
                "[models.\"a\"]\ninput = 1\noutput = 1\n[models.\"A\"]\ninput = 1\noutput = 1\n",
                &["duplicate", "models.\""],
            ),
            ("[models.\"\"]\ninput = 1\noutput = 1\n", &["empty"]),
            ("[models\n", &["bad.toml", "line 1"]),
        ];
        for (text, needles) in cases {
            let err = PriceTable::from_toml(text, "bad.toml").expect_err(text);
            let msg = err.to_string();
            for needle in *needles {
                assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
            }
            assert!(!msg.contains('\n'), "one-line message: {msg:?}");
        }
    }

    #[test]
    fn integer_prices_and_empty_files_parse() {
        let t = table("[models.m]\ninput = 3\noutput = 15\n");
        assert_eq!(t.lookup("m").map(|(_, p)| p.output), Some(15.0));
        let empty = table("");
        assert!(empty.is_empty());
        assert_eq!(empty.checked(), "");
    }

    #[test]
    fn iso_dates() {
        assert!(is_iso_date("2026-08-24"));
        assert!(!is_iso_date("2026-13-01"));
        assert!(!is_iso_date("2026-8-24"));
        assert!(!is_iso_date("24-08-2026"));
    }

    #[test]
    fn shipped_table_parses_and_is_sane() {
        let t = PriceTable::shipped().expect("config/pricing.toml parses");
        assert!(t.len() >= 60, "{} models", t.len());
        assert!(!t.is_empty());
        assert!(is_iso_date(t.checked()), "{:?}", t.checked());

        for e in &t.entries {
            assert!(e.price.input > 0.0, "{}: input", e.name);
            if e.name.contains("embed") {
                assert!(e.price.output >= 0.0, "{}: output", e.name);
            } else {
                assert!(e.price.output > 0.0, "{}: output", e.name);
            }
            if let Some(c) = e.price.cached_input {
                assert!(
                    c < e.price.input,
                    "{}: cached input should be a discount",
                    e.name
                );
            }
            // A configured key must find itself.
            assert_eq!(key(&t, &e.name).as_deref(), Some(e.name.as_str()));
        }

        // Every model the brief requires is priced under its own key.
        for name in [
            "gpt-5",
            "gpt-5-mini",
            "gpt-5-nano",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-4.1-nano",
            "gpt-4o",
            "gpt-4o-mini",
            "o1",
            "o1-mini",
            "o3",
            "o3-mini",
            "o4-mini",
            "gpt-4-turbo",
            "gpt-4",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
            "text-embedding-3-large",
            "text-embedding-ada-002",
            "claude-opus-4-1",
            "claude-opus-4",
            "claude-sonnet-4-5",
            "claude-sonnet-4",
            "claude-3-7-sonnet",
            "claude-3-5-sonnet",
            "claude-3-5-haiku",
            "claude-haiku-4-5",
            "claude-3-haiku",
            "claude-3-opus",
            "gemini-2.5-pro",
            "gemini-2.5-flash",
            "gemini-2.5-flash-lite",
            "gemini-2.0-flash",
            "gemini-2.0-flash-lite",
            "gemini-1.5-pro",
            "gemini-1.5-flash",
            "mistral-large",
            "mistral-medium",
            "mistral-small",
            "codestral",
            "open-mistral-nemo",
            "ministral-8b",
            "deepseek-chat",
            "deepseek-reasoner",
            "llama-3.3-70b-versatile",
            "llama-3.1-8b-instant",
        ] {
            assert_eq!(key(&t, name).as_deref(), Some(name), "{name} is priced");
        }

        // A few known list prices (USD per million tokens).
        let price = |m: &str| t.lookup(m).map(|(_, p)| p.clone()).expect(m);
        let p = price("gpt-4o");
        assert_eq!((p.input, p.output, p.cached_input), (2.5, 10.0, Some(1.25)));
        let p = price("gpt-4o-mini-2024-07-18");
        assert_eq!((p.input, p.output), (0.15, 0.6));
        let p = price("claude-sonnet-4-5-20250929");
        assert_eq!(
            (p.input, p.output, p.cached_input, p.cache_write),
            (3.0, 15.0, Some(0.3), Some(3.75))
        );
        let p = price("claude-opus-4-1-20250805");
        assert_eq!((p.input, p.output), (15.0, 75.0));
        let p = price("claude-3-5-haiku-latest");
        assert_eq!((p.input, p.output, p.cache_write), (0.8, 4.0, Some(1.0)));
        let p = price("models/gemini-2.0-flash-001");
        assert_eq!((p.input, p.output), (0.1, 0.4));
        let p = price("text-embedding-3-small");
        assert_eq!((p.input, p.output), (0.02, 0.0));
        assert!(price("deepseek-reasoner").cached_input.is_some());

        // Anthropic: 5-minute cache writes at 1.25× input, reads at 0.1×.
        for e in t.entries.iter().filter(|e| e.name.starts_with("claude-")) {
            let (input, w, r) = (e.price.input, e.price.cache_write, e.price.cached_input);
            assert!(
                w.is_some_and(|w| (w - input * 1.25).abs() < 1e-9),
                "{}",
                e.name
            );
            assert!(
                r.is_some_and(|r| (r - input * 0.1).abs() < 1e-9),
                "{}",
                e.name
            );
        }

        // Versioned names reach the right family, not an older one.
        assert_eq!(
            key(&t, "gpt-4o-mini-2024-07-18").as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            key(&t, "mistral-large-2411").as_deref(),
            Some("mistral-large")
        );
        assert_eq!(
            key(&t, "claude-opus-4-5-20251101").as_deref(),
            Some("claude-opus-4-5")
        );
        assert_eq!(
            key(&t, "openai/gpt-oss-120b").as_deref(),
            Some("gpt-oss-120b")
        );
    }
}

// === impl Pricing ===

/// The price table plus the bookkeeping of models it cannot price: a
/// counter, and one warning per model name (bounded).
pub struct Pricing {
    table: PriceTable,
    unknown: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Spans whose model had no known price.
    pub unknown_count: std::sync::atomic::AtomicU64,
}

/// Most distinct unknown model names remembered for warnings.
const MAX_UNKNOWN_NAMES: usize = 1024;

impl Pricing {
    /// Wraps a loaded table.
    pub fn new(table: PriceTable) -> Pricing {
        Pricing {
            table,
            unknown: std::sync::Mutex::new(std::collections::HashSet::new()),
            unknown_count: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The table.
    pub fn table(&self) -> &PriceTable {
        &self.table
    }

    /// Cost of a span's tokens: priced by the response model when it is
    /// known, else the request model. `None` (never 0) when neither has a
    /// price; that is counted, and warned about once per model.
    pub fn price(
        &self,
        response_model: Option<&str>,
        model: Option<&str>,
        tokens: &TokenCounts,
    ) -> Option<f64> {
        let candidates = [response_model, model];
        for name in candidates.into_iter().flatten() {
            if let Some(cost) = self.table.cost(name, tokens) {
                return Some(cost);
            }
        }
        let name = response_model.or(model)?;
        self.unknown_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut seen = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_UNKNOWN_NAMES && seen.insert(name.to_string()) {
            tracing::warn!(
                model = name,
                "No price for model; its spans get cost NULL (add it to a pricing_file)"
            );
        }
        None
    }

    /// Fills a span's `cost_usd` from its tokens, for billed calls (LLM
    /// calls and embeddings; token counting, for one, is free).
    pub fn price_span(&self, s: &mut crate::record::span::Span) {
        let billed = matches!(s.operation_type.as_str(), "llm_call" | "embedding");
        if !billed || (s.input_tokens.is_none() && s.output_tokens.is_none()) {
            return;
        }
        let tokens = TokenCounts {
            input: s.input_tokens.unwrap_or(0),
            output: s.output_tokens.unwrap_or(0),
            cached_input: s.cached_input_tokens.unwrap_or(0),
            cache_write: s.cache_write_tokens.unwrap_or(0),
            reasoning: s.reasoning_tokens.unwrap_or(0),
        };
        s.cost_usd = self.price(s.response_model.as_deref(), s.model.as_deref(), &tokens);
    }
}

#[cfg(test)]
mod pricing_state_tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn unknown_models_are_null_and_counted() {
        let p = Pricing::new(PriceTable::shipped().unwrap());
        let t = TokenCounts {
            input: 1_000_000,
            output: 0,
            cached_input: 0,
            cache_write: 0,
            reasoning: 0,
        };
        let known = p
            .price(Some("gpt-4o-2024-08-06"), Some("gpt-4o"), &t)
            .unwrap();
        assert!(known > 0.0);
        assert_eq!(p.price(None, Some("my-finetune-xyz"), &t), None);
        assert_eq!(p.price(Some("my-finetune-xyz"), None, &t), None);
        assert_eq!(p.unknown_count.load(Ordering::Relaxed), 2);
        // The request model is the fallback when the response model is unknown.
        assert_eq!(
            p.price(Some("weird-snapshot-name"), Some("gpt-4o"), &t),
            Some(known)
        );
    }
}
