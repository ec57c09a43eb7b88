//! The price table: `config/pricing.toml` (compiled in), a user price
//! file on top (adds or replaces models, case-insensitively), and the file
//! format's checks (unknown keys, negative or non-finite prices, duplicate
//! names, the `checked` date), each error naming its key.
//!
//! Loaded once at start-up; never read after that but through lookups
//! (`matching`), and never touches the network or the store.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::{ModelPrice, PricingError};

/// The price table shipped with llmtap.
const SHIPPED: &str = include_str!("../../../config/pricing.toml");
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
pub(super) struct Entry {
    /// The key as written in the file.
    pub(super) name: String,
    /// `name` lowercased, for matching.
    pub(super) lower: String,
    pub(super) price: ModelPrice,
}

/// A set of model prices with name matching.
///
/// Built once at start-up ([`PriceTable::load`]); lookups are read-only,
/// need no locking and allocate only for names with uppercase letters or,
/// as a last resort, for dotted names (`claude-3.5-sonnet`).
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    checked: String,
    pub(super) entries: Vec<Entry>,
    /// Lowercase key -> index into `entries`.
    pub(super) index: HashMap<String, usize>,
    /// Indexes into `entries`, longest key first (for prefix matching).
    pub(super) by_len: Vec<usize>,
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
    use super::super::fixtures::{key, sample, table};
    use super::*;

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
