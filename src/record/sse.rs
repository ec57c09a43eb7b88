//! Incremental Server-Sent Events parser for the response observer.
//!
//! Follows the WHATWG event-stream rules: lines end with `\r\n`, `\n` or
//! `\r` (a pair may be split across frames); an empty line dispatches the
//! event; `data:` lines are joined with `\n`; lines starting with `:` are
//! comments; one space after the colon is dropped; a leading BOM is ignored.
//! It keeps at most one partial line and one partial event, each capped at
//! `max_event_bytes`: an oversized event is skipped whole (and counted), so
//! hostile input cannot grow memory. It never fails.

use memchr::memchr2;

/// One dispatched event, borrowed from the parser's buffers.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field; empty means the default `message`.
    pub event: &'a str,
    /// The joined `data:` lines, without the final newline.
    pub data: &'a [u8],
}

/// See the module docs.
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    line_overflow: bool,
    data: Vec<u8>,
    has_data: bool,
    event: String,
    event_overflow: bool,
    pending_cr: bool,
    first_line: bool,
    max_event_bytes: usize,
    /// Events skipped because they were larger than the cap.
    pub oversized_events: u64,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            line_overflow: false,
            data: Vec::new(),
            has_data: false,
            event: String::new(),
            event_overflow: false,
            pending_cr: false,
            first_line: true,
            max_event_bytes,
            oversized_events: 0,
        }
    }

    /// Feeds bytes; calls `on_event` for each completed event.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(SseEvent<'_>)) {
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while !chunk.is_empty() {
            match memchr2(b'\n', b'\r', chunk) {
                None => {
                    self.push_partial(chunk);
                    return;
                }
                Some(i) => {
                    if self.line.is_empty() && !self.line_overflow {
                        self.process_line_slice(&chunk[..i], on_event);
                    } else {
                        self.push_partial(&chunk[..i]);
                        let line = std::mem::take(&mut self.line);
                        self.process_line_slice(&line, on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    self.line_overflow = false;
                    let mut skip = i + 1;
                    if chunk[i] == b'\r' {
                        if i + 1 == chunk.len() {
                            self.pending_cr = true;
                        } else if chunk[i + 1] == b'\n' {
                            skip += 1;
                        }
                    }
                    chunk = &chunk[skip..];
                }
            }
        }
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        if self.line_overflow {
            return;
        }
        if self.line.len() + bytes.len() > self.max_event_bytes {
            self.line_overflow = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    fn process_line_slice(&mut self, mut line: &[u8], on_event: &mut dyn FnMut(SseEvent<'_>)) {
        if self.first_line {
            self.first_line = false;
            if let Some(rest) = line.strip_prefix(b"\xEF\xBB\xBF") {
                line = rest;
            }
        }
        if self.line_overflow {
            // The line was too long to keep: the event it belongs to is lost.
            self.event_overflow = true;
            return;
        }
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.event_overflow {
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    self.event_overflow = true;
                    self.data.clear();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(SseEvent<'_>)) {
        if self.event_overflow {
            self.oversized_events += 1;
        } else if self.has_data {
            on_event(SseEvent {
                event: &self.event,
                data: &self.data,
            });
        }
        self.data.clear();
        self.has_data = false;
        self.event.clear();
        self.event_overflow = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e| {
                out.push((
                    e.event.to_string(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
        }
        out
    }

    #[test]
    fn basic_and_multiline() {
        let ev = parse_chunks(&[b"data: a\ndata: b\n\nevent: x\ndata:c\n\n"]);
        assert_eq!(
            ev,
            vec![("".into(), "a\nb".into()), ("x".into(), "c".into())]
        );
    }

    #[test]
    fn all_line_endings_and_split_crlf() {
        let ev = parse_chunks(&[b"data: 1\r\n\r\ndata: 2\r\rdata: 3\r", b"\n\r", b"\n"]);
        assert_eq!(
            ev.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
            vec!["1", "2", "3"]
        );
    }

    #[test]
    fn comments_bom_and_no_data() {
        let ev = parse_chunks(&[b"\xEF\xBB", b"\xBF: hi\n\nevent: e\n\ndata: z\n\n"]);
        assert_eq!(ev, vec![("".into(), "z".into())]);
    }

    #[test]
    fn split_at_every_byte_is_the_same() {
        let text = b"event: m\r\ndata: {\"a\":1}\r\n\r\n: c\n\ndata: x\rdata: y\r\r";
        let whole = parse_chunks(&[text]);
        for i in 0..text.len() {
            let (a, b) = text.split_at(i);
            assert_eq!(parse_chunks(&[a, b]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), whole);
    }

    #[test]
    fn oversized_event_is_skipped_and_memory_bounded() {
        let mut p = SseParser::new(64);
        let mut out = Vec::new();
        let big = vec![b'x'; 10_000];
        p.feed(b"data: ", &mut |e| out.push(e.data.to_vec()));
        for _ in 0..100 {
            p.feed(&big, &mut |e| out.push(e.data.to_vec()));
            assert!(p.line.capacity() <= 128);
        }
        p.feed(b"\n\ndata: ok\n\n", &mut |e| out.push(e.data.to_vec()));
        assert_eq!(out, vec![b"ok".to_vec()]);
        assert_eq!(p.oversized_events, 1);
    }
}
