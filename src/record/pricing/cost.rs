//! What one call costs: the prices of a model (`ModelPrice`), the token
//! counts of a call (`TokenCounts`, OpenTelemetry GenAI semantics) and the
//! formula between them.
//!
//! Pure arithmetic: negative counts and differences clamp at 0, and a
//! model the table cannot match has no cost (`None`), never 0.

use super::{PriceTable, PricingError};

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
    pub(super) fn validate(&self, file: &str, model: &str) -> Result<(), PricingError> {
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

impl PriceTable {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{sample, table};
    use super::*;

    const EPS: f64 = 1e-12;

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
}
