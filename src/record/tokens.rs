//! Token estimation with offline BPE tokenizers (o200k and cl100k, data built
//! into `bpe-openai`, GitHub's exact and fast re-implementation of
//! tiktoken), used only when the provider reports no usage.
//!
//! Encoders load lazily, once, and are shared (o200k costs ~65 MB and
//! ~50 ms, so an install whose providers always report usage never pays). Counting
//! runs off the request path (see `observe`); `StreamCounter` only collects
//! text on the path, and counts a full window there only when the encoder is
//! already loaded, so a long generation is never held whole.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::{Mutex, OnceLock};

use bpe_openai::Tokenizer;

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

static O200K: OnceLock<&'static Tokenizer> = OnceLock::new();
static CL100K: OnceLock<&'static Tokenizer> = OnceLock::new();

/// The encoder, loading it (blocking) on first use.
fn bpe(enc: Encoding) -> &'static Tokenizer {
    static_cell(enc).get_or_init(|| match enc {
        Encoding::O200k => bpe_openai::o200k_base(),
        Encoding::Cl100k => bpe_openai::cl100k_base(),
    })
}

fn loaded(enc: Encoding) -> bool {
    static_cell(enc).get().is_some()
}

fn static_cell(enc: Encoding) -> &'static OnceLock<&'static Tokenizer> {
    match enc {
        Encoding::O200k => &O200K,
        Encoding::Cl100k => &CL100K,
    }
}

/// Starts loading `enc` on a background thread, once.
pub fn preload(enc: Encoding) {
    static STARTED: [std::sync::Once; 2] = [std::sync::Once::new(), std::sync::Once::new()];
    let i = match enc {
        Encoding::O200k => 0,
        Encoding::Cl100k => 1,
    };
    STARTED[i].call_once(|| {
        let _ = std::thread::Builder::new()
            .name("llmtap-bpe-load".into())
            .spawn(move || {
                let _ = bpe(enc);
            });
    });
}

/// Pieces longer than this are counted without the cache.
const MAX_CACHED_PIECE: usize = 32;
/// Entries per encoding per thread before the cache is cleared.
const MAX_CACHE_ENTRIES: usize = 32 * 1024;

thread_local! {
    /// Token counts of pre-tokenized pieces (words with their leading
    /// space, numbers, punctuation runs). Generated text repeats them
    /// constantly, and a piece's count never changes, so the cache keeps
    /// counts exact while skipping most BPE work.
    static PIECES: std::cell::RefCell<[std::collections::HashMap<Box<str>, u32, FxBuild>; 2]> =
        std::cell::RefCell::new([Default::default(), Default::default()]);
}

/// Texts at least this long have their count remembered: an agent or chat
/// resends its whole history every turn, and without an answer from the
/// provider each turn re-counted it (~3.5 ms of CPU for a 100 KiB history,
/// measured through llmtap). Counted once, each old message costs a hash.
const MEMO_MIN_BYTES: usize = 1024;

/// Most texts remembered (then the memo starts over): ~24 bytes each.
const MEMO_MAX_ENTRIES: usize = 8 * 1024;

/// Counts of long texts, by encoding and a hash of the text.
static MEMO: Mutex<Option<HashMap<(u8, u64), usize>>> = Mutex::new(None);

/// Number of tokens in `text` (special tokens counted as plain text).
pub fn count(enc: Encoding, text: &str) -> usize {
    if text.len() < MEMO_MIN_BYTES {
        return count_text(enc, text);
    }
    let mut h = DefaultHasher::new();
    h.write(text.as_bytes());
    let key = (enc as u8, h.finish());
    let memo = || MEMO.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&n) = memo().as_ref().and_then(|m| m.get(&key)) {
        return n;
    }
    let n = count_text(enc, text);
    let mut memo = memo();
    let map = memo.get_or_insert_with(HashMap::new);
    if map.len() >= MEMO_MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, n);
    n
}

fn count_text(enc: Encoding, text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let tok = bpe(enc);
    let normalized = tok.normalize(text);
    PIECES.with(|caches| {
        let mut caches = caches.borrow_mut();
        let cache = &mut caches[enc as usize];
        let mut n = 0usize;
        for piece in tok.split(normalized.as_str()) {
            if piece.len() > MAX_CACHED_PIECE {
                n += tok.bpe.count(piece.as_bytes());
                continue;
            }
            n += match cache.get(piece) {
                Some(&k) => k as usize,
                None => {
                    let k = tok.bpe.count(piece.as_bytes());
                    if cache.len() >= MAX_CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(piece.into(), k as u32);
                    k
                }
            };
        }
        n
    })
}

/// FxHash (rustc's hasher): a multiply-rotate hash, fast on short keys.
/// Fine here: the keys are our own cache's, and a collision only costs a
/// probe.
#[derive(Default, Clone, Copy)]
struct FxBuild;

struct Fx(u64);

impl std::hash::BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

impl std::hash::Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Counts tokens of text that arrives in pieces, holding about `WINDOW`
/// bytes once the encoder is loaded (up to `MAX_UNCOUNTED` before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCounter {
    enc: Encoding,
    pending: String,
    counted: usize,
}

const WINDOW: usize = 16 * 1024;
/// Text held while the encoder loads; past it, the window is counted anyway.
const MAX_UNCOUNTED: usize = 4 << 20;

impl StreamCounter {
    /// A counter for text that will probably be counted: starts loading the
    /// encoder in the background.
    pub fn new(enc: Encoding) -> Self {
        preload(enc);
        StreamCounter::standby(enc)
    }

    /// A counter for text that will probably not be needed (the provider
    /// is expected to report usage): never loads the encoder by itself.
    pub fn standby(enc: Encoding) -> Self {
        StreamCounter {
            enc,
            pending: String::new(),
            counted: 0,
        }
    }

    pub fn push(&mut self, text: &str) {
        self.pending.push_str(text);
        let ready = self.pending.len() >= WINDOW
            && (loaded(self.enc) || self.pending.len() >= MAX_UNCOUNTED);
        if ready {
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

    /// Tokens so far, including the held window. May load the encoder:
    /// call off the request path.
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
    fn long_texts_are_counted_once_per_encoding() {
        let text = "Les données sont arrivées à 14h — 数据已经到达，请检查。 ".repeat(30);
        assert!(text.len() >= MEMO_MIN_BYTES);
        let o200k = count(Encoding::O200k, &text);
        assert_eq!(o200k, count_text(Encoding::O200k, &text));
        // The encodings disagree on this text, so a memo that ignored the
        // encoding would show below.
        let cl100k = count_text(Encoding::Cl100k, &text);
        assert_ne!(o200k, cl100k);
        // Remembered under its encoding: the other encoding counts anew.
        let key = |enc: Encoding| {
            let mut h = DefaultHasher::new();
            h.write(text.as_bytes());
            (enc as u8, h.finish())
        };
        let memo = MEMO
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|m| m.get(&key(Encoding::O200k)).copied());
        assert_eq!(memo, Some(o200k));
        assert_eq!(count(Encoding::O200k, &text), o200k);
        assert_eq!(count(Encoding::Cl100k, &text), cl100k);
        // A different text of the same length is not taken for it.
        let other = text.replace("données", "dommages");
        assert_eq!(other.len(), text.len());
        assert_eq!(
            count(Encoding::O200k, &other),
            count_text(Encoding::O200k, &other)
        );
    }

    #[test]
    fn real_bpe_counts() {
        // Known o200k counts.
        assert_eq!(count(Encoding::O200k, "Hello, world!"), 4);
        assert_eq!(count(Encoding::Cl100k, "Hello, world!"), 4);
        assert_eq!(count(Encoding::O200k, ""), 0);
    }

    #[test]
    fn cached_counts_equal_uncached_bpe() {
        let text =
            "The quick brown fox — 12345 résumé naïve {\"a\": [1,2]}\n\n  spaces   and\ttabs 🎉 "
                .repeat(50);
        let direct = bpe(Encoding::O200k).count(text.as_str());
        assert_eq!(count(Encoding::O200k, &text), direct);
        // Twice: the second run is served from the cache.
        assert_eq!(count(Encoding::O200k, &text), direct);
        let direct = bpe(Encoding::Cl100k).count(text.as_str());
        assert_eq!(count(Encoding::Cl100k, &text), direct);
    }

    #[test]
    fn stream_counter_matches_whole_count_and_stays_small() {
        let words: Vec<String> = (0..20_000).map(|i| format!(" word{i}")).collect();
        let whole: String = words.concat();
        let mut c = StreamCounter::new(Encoding::O200k);
        let _ = bpe(Encoding::O200k);
        for w in &words {
            c.push(w);
            assert!(c.pending.len() < WINDOW + 16);
        }
        assert_eq!(c.total(), count(Encoding::O200k, &whole));
    }
}
