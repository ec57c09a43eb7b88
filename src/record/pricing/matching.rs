//! Model-name matching: a name as a provider reports it
//! (`openai/gpt-4o-2024-08-06`, `models/gemini-2.0-flash-001`,
//! `Claude-Sonnet-4-5-20250929`) to a configured key of the table.
//!
//! Read-only, no locking, and never a guess: a name it cannot match has no
//! price. Allocates only for names with uppercase letters or, as a last
//! resort, for dotted names.

use std::borrow::Cow;

use super::{ModelPrice, PriceTable};

impl PriceTable {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, sample, table};
    use super::*;
    use crate::record::pricing::TokenCounts;

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
}
