//! Token estimation with offline BPE tokenizers (o200k and cl100k, data built
//! into `tiktoken-rs`), used only when the provider reports no usage.
//!
//! Encoders load lazily, once, and are shared. `StreamCounter` counts
//! incrementally: it keeps a small window of text and counts it at a
//! whitespace boundary once the window fills, so a long generation is never
//! held whole.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// Which BPE an estimate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
}

/// Picks the encoding for a model: o200k for gpt-4o / gpt-4.1 / gpt-5 /
/// o-series (and, as an approximation, everything not from OpenAI's
/// cl100k generation), cl100k for gpt-4 / gpt-3.5 / text-embedding-3.
pub fn encoding_for(model: Option<&str>) -> Encoding {
    let m = model.unwrap_or("").to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or("");
    let cl100k = (m.starts_with("gpt-4")
        && !m.starts_with("gpt-4o")
        && !m.starts_with("gpt-4.1")
        && !m.starts_with("gpt-4.5"))
        || m.starts_with("gpt-3.5")
        || m.starts_with("gpt-35")
        || m.starts_with("text-embedding-3")
        || m.starts_with("text-embedding-ada");
    if cl100k {
        Encoding::Cl100k
    } else {
        Encoding::O200k
    }
}

fn bpe(enc: Encoding) -> Option<&'static CoreBPE> {
    static O200K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    static CL100K: OnceLock<Option<CoreBPE>> = OnceLock::new();
    match enc {
        Encoding::O200k => O200K
            .get_or_init(|| tiktoken_rs::o200k_base().ok())
            .as_ref(),
        Encoding::Cl100k => CL100K
            .get_or_init(|| tiktoken_rs::cl100k_base().ok())
            .as_ref(),
    }
}

/// Loads both encoders now (call from a blocking thread at start-up so the
/// first estimate on the request path does not pay for it).
pub fn warm_up() {
    let _ = bpe(Encoding::O200k);
    let _ = bpe(Encoding::Cl100k);
}

/// Number of tokens in `text` (special tokens counted as plain text).
pub fn count(enc: Encoding, text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    match bpe(enc) {
        Some(b) => b.encode_ordinary(text).len(),
        // The data is compiled in; failing to load it would be a build bug.
        // Fall back to the usual four-characters-per-token rule.
        None => text.len().div_ceil(4),
    }
}

/// Counts tokens of text that arrives in pieces, holding at most about
/// `WINDOW` bytes.
#[derive(Debug)]
pub struct StreamCounter {
    enc: Encoding,
    pending: String,
    counted: usize,
}

const WINDOW: usize = 16 * 1024;

impl StreamCounter {
    pub fn new(enc: Encoding) -> Self {
        StreamCounter {
            enc,
            pending: String::new(),
            counted: 0,
        }
    }

    pub fn push(&mut self, text: &str) {
        self.pending.push_str(text);
        if self.pending.len() >= WINDOW {
            // Cut before the last whitespace: BPE pre-tokenization attaches a
            // leading space to the next word, so a cut there changes nothing.
            let cut = self
                .pending
                .rfind(char::is_whitespace)
                .filter(|&i| i > 0)
                .unwrap_or(self.pending.len());
            self.counted += count(self.enc, &self.pending[..cut]);
            self.pending.drain(..cut);
        }
    }

    /// Tokens so far, including the held window.
    pub fn total(&self) -> usize {
        self.counted + count(self.enc, &self.pending)
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.counted == 0 && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_encodings() {
        assert_eq!(encoding_for(Some("gpt-4o-mini")), Encoding::O200k);
        assert_eq!(encoding_for(Some("gpt-4.1")), Encoding::O200k);
        assert_eq!(encoding_for(Some("o3-mini")), Encoding::O200k);
        assert_eq!(encoding_for(Some("gpt-4-turbo")), Encoding::Cl100k);
        assert_eq!(encoding_for(Some("gpt-3.5-turbo")), Encoding::Cl100k);
        assert_eq!(encoding_for(Some("llama-3.1-70b")), Encoding::O200k);
        assert_eq!(encoding_for(None), Encoding::O200k);
    }

    #[test]
    fn real_bpe_counts() {
        // Known o200k counts.
        assert_eq!(count(Encoding::O200k, "Hello, world!"), 4);
        assert_eq!(count(Encoding::Cl100k, "Hello, world!"), 4);
        assert_eq!(count(Encoding::O200k, ""), 0);
    }

    #[test]
    fn stream_counter_matches_whole_count_and_stays_small() {
        let words: Vec<String> = (0..20_000).map(|i| format!(" word{i}")).collect();
        let whole: String = words.concat();
        let mut c = StreamCounter::new(Encoding::O200k);
        for w in &words {
            c.push(w);
            assert!(c.pending.len() < WINDOW + 16);
        }
        assert_eq!(c.total(), count(Encoding::O200k, &whole));
    }
}
