//! Stitch: zero-code trace structure. Joins the turns of a multi-turn chat
//! or agent loop into one trace, and turns the tool calls a model asked for
//! into `tool_call` spans, with no header from the caller.
//!
//! How: every message is reduced to a digest of its role, its text (with
//! whitespace collapsed, so formatting and JSON key order do not matter)
//! and its tool ids. Digests are chained from a seed (the API key's hash:
//! conversations never join across keys). A finished exchange registers the
//! chain of its request messages followed by the assistant's reply; a later
//! request whose messages extend that chain joins the exchange's trace. Tool
//! calls wait in the index until a request carries their results.
//!
//! Memory is bounded: at most `max_entries` turns and as many pending calls,
//! each expiring after `ttl`; expired calls come back from `sweep` to be
//! written `cancelled`. Nothing here does I/O or awaits.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// === digests ===

/// Hashes text with runs of whitespace collapsed to one space and leading
/// and trailing whitespace dropped, however the text arrives in pieces.
///
/// Text is hashed in stretches that are already collapsed (words and the
/// single spaces between them), short ones gathered into a block first,
/// not word by word: a 100 KiB chat history, which stitching digests inline
/// on every request, took ~375 µs at one `write` per word, most of it the
/// hasher's per-call cost. SipHash reads its input as one stream, so the
/// digest does not depend on how the bytes were split.
#[derive(Debug, Clone)]
pub struct TextDigest {
    h: DefaultHasher,
    block: [u8; BLOCK],
    filled: usize,
    pending_space: bool,
    any: bool,
}

/// Bytes of collapsed text buffered before they are hashed.
const BLOCK: usize = 128;

/// Byte classes for [`TextDigest::push`]: ASCII whitespace, the first byte
/// of a character that may be Unicode whitespace (U+0085, U+00A0 start
/// with 0xC2; U+1680 with 0xE1; U+2000–U+205F with 0xE2; U+3000 with
/// 0xE3), and everything else.
const PLAIN: u8 = 0;
const SPACE: u8 = 1;
const MAYBE: u8 = 2;
static CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut b = 0x09;
    while b <= 0x0D {
        t[b] = SPACE;
        b += 1;
    }
    t[0x20] = SPACE;
    t[0xC2] = MAYBE;
    t[0xE1] = MAYBE;
    t[0xE2] = MAYBE;
    t[0xE3] = MAYBE;
    t
};

/// Printable ASCII (0x21–0x7E), DEL, and UTF-8 continuation bytes
/// (0x80–0xBF) and the never-used 0xC0–0xC1: none is, or begins,
/// whitespace. One compare, for the scanning loop.
fn is_plain(b: u8) -> bool {
    b.wrapping_sub(0x21) < 0xA1
}

/// Whether the character at byte `i` of `text` is whitespace, and its
/// width; `None` past the end.
fn class_at(text: &str, i: usize) -> Option<(bool, usize)> {
    match CLASS[usize::from(*text.as_bytes().get(i)?)] {
        PLAIN => Some((false, 1)),
        SPACE => Some((true, 1)),
        _ => text
            .get(i..)?
            .chars()
            .next()
            .map(|c| (c.is_whitespace(), c.len_utf8())),
    }
}

impl Default for TextDigest {
    fn default() -> Self {
        TextDigest {
            h: DefaultHasher::new(),
            block: [0; BLOCK],
            filled: 0,
            pending_space: false,
            any: false,
        }
    }
}

impl TextDigest {
    pub fn push(&mut self, text: &str) {
        let bytes = text.as_bytes();
        // The start of the current stretch of text that goes into the
        // digest as it is (words, and the single spaces between them).
        let mut run_start: Option<usize> = None;
        let mut i = 0;
        loop {
            // Fast: printable ASCII and UTF-8 continuation bytes (never
            // whitespace), and a single space between two of them.
            let plain = i;
            while let Some(&b) = bytes.get(i) {
                if is_plain(b) {
                    i += 1;
                } else if b == b' ' && i > plain && bytes.get(i + 1).is_some_and(|&n| is_plain(n)) {
                    i += 2;
                } else {
                    break;
                }
            }
            if i > plain && run_start.is_none() {
                self.begin_run();
                run_start = Some(plain);
            }
            let Some((white, width)) = class_at(text, i) else {
                break;
            };
            if !white {
                if run_start.is_none() {
                    self.begin_run();
                    run_start = Some(i);
                }
            } else if run_start.is_some()
                && bytes[i] == b' '
                && class_at(text, i + 1).is_some_and(|(white, _)| !white)
            {
                // One space between two words: kept as it is.
            } else {
                if let Some(s) = run_start.take() {
                    self.put(&bytes[s..i]);
                }
                if self.any {
                    self.pending_space = true;
                }
            }
            i += width;
        }
        if let Some(s) = run_start {
            self.put(&bytes[s..]);
        }
    }

    /// Before the first byte of a run: the space that stands for the
    /// whitespace before it, if any.
    fn begin_run(&mut self) {
        if self.pending_space {
            self.put(b" ");
            self.pending_space = false;
        }
        self.any = true;
    }

    /// Appends collapsed text: short pieces gather in the block, long ones
    /// go to the hasher directly (the same stream either way).
    fn put(&mut self, bytes: &[u8]) {
        if self.filled + bytes.len() <= BLOCK {
            self.block[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
            self.filled += bytes.len();
            return;
        }
        self.h.write(&self.block[..self.filled]);
        self.filled = 0;
        if bytes.len() >= BLOCK {
            self.h.write(bytes);
        } else {
            self.block[..bytes.len()].copy_from_slice(bytes);
            self.filled = bytes.len();
        }
    }

    /// A separator between blocks of one message (joined as a space).
    pub fn separate(&mut self) {
        if self.any {
            self.pending_space = true;
        }
    }

    pub fn finish(&self) -> u64 {
        let mut h = self.h.clone();
        h.write(&self.block[..self.filled]);
        h.finish()
    }
}

/// The digest of one message.
pub fn message_digest(role: &str, text: &TextDigest, tool_ids: &[String]) -> u64 {
    let mut h = DefaultHasher::new();
    // "developer" is the newer name of "system".
    let role = if role == "developer" { "system" } else { role };
    role.hash(&mut h);
    text.finish().hash(&mut h);
    tool_ids.hash(&mut h);
    h.finish()
}

/// The chain seed for a caller (its API key's hash) and route.
pub fn seed(api_key_hash: Option<&str>, route: &str) -> u64 {
    let mut h = DefaultHasher::new();
    api_key_hash.hash(&mut h);
    route.hash(&mut h);
    h.finish()
}

/// Extends a chain by one message digest.
pub fn chain(prev: u64, digest: u64) -> u64 {
    let mut h = DefaultHasher::new();
    prev.hash(&mut h);
    digest.hash(&mut h);
    h.finish()
}

/// One message of a request, reduced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub digest: u64,
    pub is_assistant: bool,
}

/// A tool result found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub call_id: String,
    /// The result text (capped).
    pub content: String,
}

/// What a request's history says, for stitching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conversation {
    pub msgs: Vec<Msg>,
    pub results: Vec<ToolResult>,
    /// Responses API chaining.
    pub previous_response_id: Option<String>,
}

impl Conversation {
    /// Chain values after each message: `out[i]` covers `msgs[..=i]`.
    pub fn chains(&self, seed: u64) -> Vec<u64> {
        let mut c = seed;
        self.msgs
            .iter()
            .map(|m| {
                c = chain(c, m.digest);
                c
            })
            .collect()
    }
}

// === the index ===

/// A registered turn: where a continuation of it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub trace_id: String,
    /// The first span of the trace: later turns hang from it.
    pub root_span_id: String,
    pub conversation_id: String,
}

/// A tool call waiting for its result.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCall {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    pub trace_id: String,
    /// The LLM span that asked for it.
    pub parent_span_id: String,
    pub conversation_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub api_key_hash: Option<String>,
    pub provider: String,
    pub route: String,
    /// When the response that asked for it ended (µs since the epoch).
    pub asked_at_us: i64,
}

struct Timed<T> {
    value: T,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    turns: HashMap<u64, Timed<Turn>>,
    turn_order: VecDeque<(u64, Instant)>,
    responses: HashMap<String, Timed<Turn>>,
    response_order: VecDeque<(String, Instant)>,
    calls: HashMap<(u64, String), Timed<PendingCall>>,
    call_order: VecDeque<((u64, String), Instant)>,
}

/// See the module docs.
pub struct Index {
    inner: Mutex<Inner>,
    ttl: Duration,
    max_entries: usize,
    max_calls: usize,
}

/// Most bytes of a pending call's arguments kept (its span's request body).
pub const MAX_PENDING_ARGS: usize = 8 * 1024;

/// Drops expired (or, past `max`, oldest) entries of one map; returns what
/// was dropped.
fn evict<K: Eq + Hash + Clone, V>(
    map: &mut HashMap<K, Timed<V>>,
    order: &mut VecDeque<(K, Instant)>,
    now: Instant,
    max: usize,
) -> Vec<V> {
    let mut out = Vec::new();
    while let Some((key, expires)) = order.front() {
        let over = map.len() > max;
        if !over && *expires > now {
            break;
        }
        let (key, expires) = (key.clone(), *expires);
        order.pop_front();
        // A key re-inserted later has a newer expiry: this entry is stale.
        if map.get(&key).is_some_and(|t| t.expires == expires) {
            if let Some(t) = map.remove(&key) {
                out.push(t.value);
            }
        }
    }
    out
}

fn insert<K: Eq + Hash + Clone, V>(
    map: &mut HashMap<K, Timed<V>>,
    order: &mut VecDeque<(K, Instant)>,
    key: K,
    value: V,
    expires: Instant,
) {
    order.push_back((key.clone(), expires));
    map.insert(key, Timed { value, expires });
}

impl Index {
    /// `max_entries` turns (and as many response ids), `max_calls` pending
    /// tool calls, each kept at most `ttl`.
    pub fn new(ttl: Duration, max_entries: usize, max_calls: usize) -> Index {
        Index {
            inner: Mutex::new(Inner::default()),
            ttl,
            max_entries,
            max_calls,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a single map/queue operation: never half done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The turn a request continues: by `previous_response_id`, else the
    /// longest prefix of its messages that ends with an assistant message
    /// and was registered.
    pub fn find(&self, seed: u64, conv: &Conversation) -> Option<Turn> {
        let now = Instant::now();
        let inner = self.lock();
        if let Some(id) = &conv.previous_response_id {
            if let Some(t) = inner.responses.get(id).filter(|t| t.expires > now) {
                return Some(t.value.clone());
            }
        }
        let chains = conv.chains(seed);
        (0..conv.msgs.len())
            .rev()
            .filter(|&i| conv.msgs[i].is_assistant)
            .find_map(|i| {
                inner
                    .turns
                    .get(&chains[i])
                    .filter(|t| t.expires > now)
                    .map(|t| t.value.clone())
            })
    }

    /// Registers a finished turn under its chain key (request messages +
    /// the assistant's reply) and, for the Responses API, its response id.
    pub fn register(
        &self,
        key: Option<u64>,
        response_id: Option<&str>,
        turn: Turn,
    ) -> Vec<PendingCall> {
        let now = Instant::now();
        let expires = now + self.ttl;
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(key) = key {
            insert(
                &mut inner.turns,
                &mut inner.turn_order,
                key,
                turn.clone(),
                expires,
            );
        }
        if let Some(id) = response_id {
            insert(
                &mut inner.responses,
                &mut inner.response_order,
                id.to_string(),
                turn,
                expires,
            );
        }
        self.evict_locked(inner, now)
    }

    /// Remembers tool calls until their results arrive.
    pub fn add_calls(&self, seed: u64, calls: Vec<PendingCall>) -> Vec<PendingCall> {
        let now = Instant::now();
        let expires = now + self.ttl;
        let mut inner = self.lock();
        let inner = &mut *inner;
        for mut call in calls {
            if call.arguments.len() > MAX_PENDING_ARGS {
                let mut cut = MAX_PENDING_ARGS;
                while !call.arguments.is_char_boundary(cut) {
                    cut -= 1;
                }
                call.arguments.truncate(cut);
            }
            let key = (seed, call.call_id.clone());
            insert(&mut inner.calls, &mut inner.call_order, key, call, expires);
        }
        self.evict_locked(inner, now)
    }

    /// Takes the pending calls whose results `results` carries (each once).
    pub fn take_calls<'a>(
        &self,
        seed: u64,
        results: &'a [ToolResult],
    ) -> Vec<(PendingCall, &'a ToolResult)> {
        if results.is_empty() {
            return Vec::new();
        }
        let mut inner = self.lock();
        results
            .iter()
            .filter_map(|r| {
                inner
                    .calls
                    .remove(&(seed, r.call_id.clone()))
                    .map(|t| (t.value, r))
            })
            .collect()
    }

    /// Drops expired entries; returns the expired pending calls (to be
    /// written `cancelled`).
    pub fn sweep(&self) -> Vec<PendingCall> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.evict_locked(&mut inner, now)
    }

    /// Everything still pending (at shutdown).
    pub fn drain_calls(&self) -> Vec<PendingCall> {
        let mut inner = self.lock();
        inner.call_order.clear();
        inner.calls.drain().map(|(_, t)| t.value).collect()
    }

    fn evict_locked(&self, inner: &mut Inner, now: Instant) -> Vec<PendingCall> {
        evict(
            &mut inner.turns,
            &mut inner.turn_order,
            now,
            self.max_entries,
        );
        evict(
            &mut inner.responses,
            &mut inner.response_order,
            now,
            self.max_entries,
        );
        evict(&mut inner.calls, &mut inner.call_order, now, self.max_calls)
    }

    /// (turns, responses, pending calls) held now.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.turns.len(), inner.responses.len(), inner.calls.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(text: &str) -> u64 {
        let mut d = TextDigest::default();
        d.push(text);
        d.finish()
    }

    #[test]
    fn text_digest_ignores_whitespace_shape_and_chunking() {
        let a = digest("Hello,   world!\n\nHow  are you?");
        assert_eq!(a, digest("  Hello, world! How are you?  "));
        let mut d = TextDigest::default();
        for piece in [
            "Hel", "lo,", " ", "  wor", "ld!\n", "\nHow a", "re you?", " ",
        ] {
            d.push(piece);
        }
        assert_eq!(d.finish(), a);
        assert_ne!(a, digest("Hello,world! How are you?"));
        let mut blocks = TextDigest::default();
        blocks.push("Hello,");
        blocks.separate();
        blocks.push("world! How are you?");
        assert_eq!(blocks.finish(), a);
    }

    /// The digest as it was computed before blocks: one hasher write per
    /// run of text, over `char_indices`.
    fn word_by_word(pieces: &[&str]) -> u64 {
        let mut h = DefaultHasher::new();
        let (mut pending, mut any) = (false, false);
        for text in pieces {
            let mut run: Option<usize> = None;
            for (i, c) in text.char_indices() {
                if c.is_whitespace() {
                    if let Some(s) = run.take() {
                        h.write(&text.as_bytes()[s..i]);
                    }
                    pending |= any;
                } else if run.is_none() {
                    if pending {
                        h.write(b" ");
                        pending = false;
                    }
                    any = true;
                    run = Some(i);
                }
            }
            if let Some(s) = run {
                h.write(&text.as_bytes()[s..]);
            }
        }
        h.finish()
    }

    #[test]
    fn block_digest_equals_the_word_by_word_digest() {
        // Every kind of Unicode whitespace, characters that share their
        // first byte with one (U+00E9 é is 0xC3; U+00A9 © is 0xC2 0xA9;
        // U+2014 — is 0xE2 0x80 0x94), and runs longer than a block.
        let long = "x".repeat(3 * BLOCK + 5);
        let texts = [
            "plain words and  double  spaces\n\t\r\x0b\x0c end",
            "nbsp\u{a0}nel\u{85}ogham\u{1680}en\u{2002}thin\u{2009}line\u{2028}para\u{2029}narrow\u{202f}math\u{205f}ideo\u{3000}!",
            "© 2026 — résumé naïve 数据 🙂 \u{1F600}",
            long.as_str(),
            "   leading and trailing   ",
            "",
        ];
        for t in texts {
            assert_eq!(digest(t), word_by_word(&[t]), "{t:?}");
            // Split at every character boundary: the same digest.
            for (cut, _) in t.char_indices() {
                let mut d = TextDigest::default();
                d.push(&t[..cut]);
                d.push(&t[cut..]);
                assert_eq!(
                    d.finish(),
                    word_by_word(&[&t[..cut], &t[cut..]]),
                    "{t:?} at {cut}"
                );
                assert_eq!(d.finish(), digest(t), "{t:?} at {cut}");
            }
        }
    }

    fn msg(role: &str, text: &str) -> Msg {
        let mut d = TextDigest::default();
        d.push(text);
        Msg {
            digest: message_digest(role, &d, &[]),
            is_assistant: role == "assistant",
        }
    }

    fn turn(t: &str) -> Turn {
        Turn {
            trace_id: t.into(),
            root_span_id: format!("root-{t}"),
            conversation_id: t.into(),
        }
    }

    #[test]
    fn longest_registered_prefix_wins_and_seeds_separate() {
        let idx = Index::new(Duration::from_secs(60), 100, 100);
        let s = seed(Some("k1"), "/v1");
        let first = Conversation {
            msgs: vec![msg("user", "hi")],
            ..Default::default()
        };
        let reply = msg("assistant", "hello");
        let key1 = chain(*first.chains(s).last().unwrap(), reply.digest);
        idx.register(Some(key1), None, turn("t1"));
        let second = Conversation {
            msgs: vec![msg("user", "hi"), reply.clone(), msg("user", "more")],
            ..Default::default()
        };
        assert_eq!(idx.find(s, &second), Some(turn("t1")));
        // Another API key never joins.
        assert_eq!(idx.find(seed(Some("k2"), "/v1"), &second), None);
        // A different history does not join.
        let other = Conversation {
            msgs: vec![msg("user", "hey"), reply, msg("user", "more")],
            ..Default::default()
        };
        assert_eq!(idx.find(s, &other), None);
    }

    #[test]
    fn calls_are_taken_once_and_expire_into_sweep() {
        let idx = Index::new(Duration::from_millis(30), 100, 100);
        let call = |id: &str| PendingCall {
            call_id: id.into(),
            name: "f".into(),
            arguments: "{}".into(),
            trace_id: "t".into(),
            parent_span_id: "p".into(),
            conversation_id: None,
            session_id: None,
            user_id: None,
            api_key_hash: None,
            provider: "openai".into(),
            route: "/v1".into(),
            asked_at_us: 0,
        };
        idx.add_calls(1, vec![call("a"), call("b")]);
        let results = vec![ToolResult {
            call_id: "a".into(),
            content: "42".into(),
        }];
        assert_eq!(idx.take_calls(1, &results).len(), 1);
        assert_eq!(idx.take_calls(1, &results).len(), 0);
        assert_eq!(
            idx.take_calls(
                2,
                &[ToolResult {
                    call_id: "b".into(),
                    content: String::new()
                }]
            )
            .len(),
            0
        );
        std::thread::sleep(Duration::from_millis(40));
        let expired = idx.sweep();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].call_id, "b");
        assert_eq!(idx.sizes(), (0, 0, 0));
    }

    #[test]
    fn memory_stays_bounded_under_any_number_of_conversations() {
        let idx = Index::new(Duration::from_secs(3600), 1000, 10);
        for i in 0..100_000u64 {
            idx.register(Some(i), Some(&format!("resp_{i}")), turn("t"));
        }
        let (turns, responses, _) = idx.sizes();
        assert!(turns <= 1000 && responses <= 1000);
        let call = PendingCall {
            call_id: String::new(),
            name: "f".into(),
            arguments: "é".repeat(10_000),
            trace_id: "t".into(),
            parent_span_id: "p".into(),
            conversation_id: None,
            session_id: None,
            user_id: None,
            api_key_hash: None,
            provider: "openai".into(),
            route: "/v1".into(),
            asked_at_us: 0,
        };
        let mut evicted = 0;
        for i in 0..50 {
            evicted += idx
                .add_calls(
                    1,
                    vec![PendingCall {
                        call_id: format!("c{i}"),
                        ..call.clone()
                    }],
                )
                .len();
        }
        assert_eq!(
            evicted, 40,
            "past the cap the oldest calls come back to be written cancelled"
        );
        assert!(idx
            .lock()
            .calls
            .values()
            .all(|c| c.value.arguments.len() <= MAX_PENDING_ARGS));
        let inner = idx.lock();
        assert!(inner.turn_order.len() <= 1001);
    }
}
