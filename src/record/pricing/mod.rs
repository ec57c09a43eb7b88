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
//!
//! Files: `table` (the table: loading, merging, the file format), `matching`
//! (a reported model name to a configured key), `cost` (token counts and
//! the cost formula); this file holds the errors and [`Pricing`], the table
//! plus the bookkeeping of models it cannot price.

mod cost;
mod matching;
mod table;

pub use cost::{ModelPrice, TokenCounts};
pub use table::PriceTable;

use std::path::PathBuf;

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
        let u = s.usage();
        let tokens = TokenCounts {
            input: u.input.unwrap_or(0),
            output: u.output.unwrap_or(0),
            cached_input: u.cached_input.unwrap_or(0),
            cache_write: u.cache_write.unwrap_or(0),
            reasoning: u.reasoning.unwrap_or(0),
        };
        s.cost_usd = self.price(s.response_model.as_deref(), s.model.as_deref(), &tokens);
    }
}

#[cfg(test)]
mod tests {
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

/// Tables the tests of `table`, `matching` and `cost` share.
#[cfg(test)]
mod fixtures {
    use super::PriceTable;

    pub(super) fn table(text: &str) -> PriceTable {
        PriceTable::from_toml(text, "test.toml").expect("test table parses")
    }

    /// A small table with the keys the matching examples need.
    pub(super) fn sample() -> PriceTable {
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

    pub(super) fn key(t: &PriceTable, model: &str) -> Option<String> {
        t.lookup(model).map(|(k, _)| k.to_string())
    }
}
