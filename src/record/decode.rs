//! Content decoding for observers only: gzip, deflate, br and zstd.
//!
//! The client always gets the encoded bytes untouched; this module turns a
//! copy into plain bytes for the parsers. Decoding is incremental (push:
//! feed encoded frames, get decoded pieces) and capped: past
//! `max_decoded_bytes`, or on corrupt input or an unknown encoding, it gives
//! up for good and the observer records what it had.
//!
//! Memory is bounded while decoding, not after: the decoders write into a
//! [`Sink`] that refuses bytes past its room, so a bomb (a few KB that
//! expand to gigabytes, in one frame) never makes more than [`PIECE`] bytes
//! of output at a time. gzip, deflate and zstd resume after a refusal (the
//! piece is handed on, decoding goes on); brotli cannot, so it is fed small
//! slices and gives up if one expands past [`BROTLI_PIECE`].

use std::io::Write;

/// Most decoded bytes held at once (gzip, deflate, zstd).
pub const PIECE: usize = 1 << 20;
/// Most decoded bytes one brotli input slice may expand to.
pub const BROTLI_PIECE: usize = 16 << 20;
/// Brotli input slice size.
const BROTLI_SLICE: usize = 1024;

/// Why decoding stopped.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("corrupt {0} data")]
    Corrupt(&'static str),
    #[error("decoded body larger than {0} bytes")]
    TooLarge(usize),
}

/// Where a decoder writes: a buffer that takes at most `room` more bytes,
/// then refuses (an error the decoder passes back up, output kept pending).
#[derive(Debug, Default)]
pub struct Sink {
    buf: Vec<u8>,
    room: usize,
    refused: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 && !data.is_empty() {
            self.refused = true;
            return Err(std::io::Error::other("decoded piece full"));
        }
        let n = data.len().min(self.room);
        self.buf.extend_from_slice(&data[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Inner {
    Identity,
    Gzip(Box<flate2::write::MultiGzDecoder<Sink>>),
    Deflate(Box<flate2::write::ZlibDecoder<Sink>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Sink>>),
    Failed(DecodeError),
}

/// See the module docs.
pub struct Decoder {
    inner: Inner,
    decoded: usize,
    max_decoded_bytes: usize,
}

impl Decoder {
    /// A decoder for a `Content-Encoding` header value (`None` = identity).
    pub fn new(encoding: Option<&str>, max_decoded_bytes: usize) -> Decoder {
        let enc = encoding.map(|e| e.trim().to_ascii_lowercase());
        let inner = match enc.as_deref() {
            None | Some("") | Some("identity") => Inner::Identity,
            Some("gzip") | Some("x-gzip") => Inner::Gzip(Box::new(
                flate2::write::MultiGzDecoder::new(Sink::default()),
            )),
            Some("deflate") => {
                Inner::Deflate(Box::new(flate2::write::ZlibDecoder::new(Sink::default())))
            }
            Some("br") => Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Sink::default(),
                4096,
            ))),
            Some("zstd") => match zstd::stream::write::Decoder::new(Sink::default()) {
                Ok(d) => Inner::Zstd(Box::new(d)),
                Err(_) => Inner::Failed(DecodeError::Corrupt("zstd")),
            },
            Some(other) => Inner::Failed(DecodeError::Unsupported(other.to_string())),
        };
        Decoder {
            inner,
            decoded: 0,
            max_decoded_bytes,
        }
    }

    /// True when the body is not encoded.
    pub fn is_identity(&self) -> bool {
        matches!(self.inner, Inner::Identity)
    }

    /// The error that stopped decoding, if any.
    pub fn error(&self) -> Option<&DecodeError> {
        match &self.inner {
            Inner::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Feeds encoded bytes; `out` gets each decoded piece.
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) {
        let max = self.max_decoded_bytes;
        let decoded = &mut self.decoded;
        let result = match &mut self.inner {
            Inner::Failed(_) => return,
            Inner::Identity => {
                *decoded += input.len();
                out(input);
                return;
            }
            Inner::Gzip(d) => pump(&mut **d, input, "gzip", decoded, max, out, |d| d.get_mut()),
            Inner::Deflate(d) => pump(&mut **d, input, "deflate", decoded, max, out, |d| {
                d.get_mut()
            }),
            Inner::Zstd(d) => pump(&mut **d, input, "zstd", decoded, max, out, |d| d.get_mut()),
            Inner::Brotli(d) => {
                let mut result = Ok(());
                for slice in input.chunks(BROTLI_SLICE) {
                    result = brotli_slice(d, slice, decoded, max, out);
                    if result.is_err() {
                        break;
                    }
                }
                result
            }
        };
        if let Err(e) = result {
            self.inner = Inner::Failed(e);
        }
    }
}

/// Room for the next piece: at most `PIECE`, and one byte past the cap so
/// that going over it is seen.
fn room(decoded: usize, max: usize, piece: usize) -> usize {
    max.saturating_sub(decoded).saturating_add(1).min(piece)
}

/// Hands the sink's bytes on; fails once the total passes the cap.
fn drain(
    sink: &mut Sink,
    decoded: &mut usize,
    max: usize,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), DecodeError> {
    let piece = std::mem::take(&mut sink.buf);
    *decoded += piece.len();
    if *decoded > max {
        return Err(DecodeError::TooLarge(max));
    }
    if !piece.is_empty() {
        out(&piece);
    }
    Ok(())
}

/// Writes `input` into a resumable push decoder (gzip, deflate, zstd), a
/// piece at a time: when the sink refuses, its piece is handed on and the
/// decoder, which kept what it could not write, goes on.
fn pump<W: Write>(
    decoder: &mut W,
    mut input: &[u8],
    name: &'static str,
    decoded: &mut usize,
    max: usize,
    out: &mut dyn FnMut(&[u8]),
    sink: impl Fn(&mut W) -> &mut Sink,
) -> Result<(), DecodeError> {
    let mut flushed = false;
    // Each round hands on a piece or consumes input, so this ends; the
    // bound is a guard against a decoder that does neither.
    let mut idle_rounds = 0;
    while !flushed {
        {
            let s = sink(decoder);
            s.room = room(*decoded, max, PIECE);
            s.refused = false;
        }
        let before = input.len();
        let step = if input.is_empty() {
            decoder.flush().map(|()| flushed = true)
        } else {
            match decoder.write(input) {
                Ok(0) => return Err(DecodeError::Corrupt(name)),
                Ok(n) => {
                    input = &input[n..];
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        let s = sink(decoder);
        let refused = s.refused;
        let produced = !s.buf.is_empty();
        drain(s, decoded, max, out)?;
        match step {
            Ok(()) => {}
            Err(_) if refused => {}
            Err(_) => return Err(DecodeError::Corrupt(name)),
        }
        if produced || input.len() < before || flushed {
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            if idle_rounds > 3 {
                return Err(DecodeError::Corrupt(name));
            }
        }
    }
    Ok(())
}

/// Brotli's writer drops its output when the sink refuses, so a refusal is
/// final: one small slice expanding past `BROTLI_PIECE` is a bomb.
fn brotli_slice(
    decoder: &mut brotli_decompressor::DecompressorWriter<Sink>,
    slice: &[u8],
    decoded: &mut usize,
    max: usize,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), DecodeError> {
    {
        let s = decoder.get_mut();
        s.room = room(*decoded, max, BROTLI_PIECE);
        s.refused = false;
    }
    let step = decoder.write_all(slice).and_then(|()| decoder.flush());
    let s = decoder.get_mut();
    let refused = s.refused;
    drain(s, decoded, max, out)?;
    match step {
        Ok(()) => Ok(()),
        Err(_) if refused => Err(DecodeError::TooLarge(max.min(*decoded))),
        Err(_) => Err(DecodeError::Corrupt("br")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        enc: Option<&str>,
        encoded: &[u8],
        step: usize,
        cap: usize,
    ) -> (Vec<u8>, Option<DecodeError>) {
        let mut d = Decoder::new(enc, cap);
        let mut out = Vec::new();
        for c in encoded.chunks(step) {
            d.feed(c, &mut |p| out.extend_from_slice(p));
        }
        (out, d.error().cloned())
    }

    fn sample() -> Vec<u8> {
        (0..5000)
            .flat_map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
            .collect()
    }

    #[test]
    fn gzip_in_small_pieces() {
        let plain = sample();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&plain).unwrap();
        let gz = e.finish().unwrap();
        assert_eq!(run(Some("gzip"), &gz, 7, usize::MAX), (plain, None));
    }

    #[test]
    fn deflate_br_zstd() {
        let plain = sample();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&plain).unwrap();
        assert_eq!(
            run(Some("deflate"), &z.finish().unwrap(), 100, usize::MAX).0,
            plain
        );
        let zs = zstd::stream::encode_all(&plain[..], 3).unwrap();
        assert_eq!(run(Some("zstd"), &zs, 33, usize::MAX).0, plain);
    }

    #[test]
    fn concatenated_frames_and_pieces_stay_bounded() {
        // 300 zstd frames of 1 MiB of zeros: about 50 bytes each, so one
        // 16 KiB input frame holds ~300 MiB of output. Capped at 256 MiB.
        let one = zstd::stream::encode_all(&vec![0u8; 1 << 20][..], 19).unwrap();
        let all: Vec<u8> = (0..300).flat_map(|_| one.iter().copied()).collect();
        let mut d = Decoder::new(Some("zstd"), 256 << 20);
        let (mut n, mut biggest) = (0, 0);
        for c in all.chunks(16384) {
            d.feed(c, &mut |p| {
                n += p.len();
                biggest = biggest.max(p.len());
            });
        }
        assert_eq!(d.error(), Some(&DecodeError::TooLarge(256 << 20)));
        assert_eq!(n, 256 << 20);
        assert!(biggest <= PIECE, "{biggest}");
        // Under the cap, every byte comes out, a piece at a time.
        let mut d = Decoder::new(Some("zstd"), usize::MAX);
        let mut n = 0;
        for c in all.chunks(16384) {
            d.feed(c, &mut |p| {
                assert!(p.len() <= PIECE);
                n += p.len();
            });
        }
        assert_eq!((n, d.error()), (300 << 20, None));
        // gzip members concatenated, likewise.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 1 << 20]).unwrap();
        let one = e.finish().unwrap();
        let all: Vec<u8> = (0..20).flat_map(|_| one.iter().copied()).collect();
        let (out, err) = run(Some("gzip"), &all, 100_000, usize::MAX);
        assert_eq!((out.len(), err), (20 << 20, None));
        let (out, err) = run(Some("gzip"), &all, 100_000, 5 << 20);
        assert_eq!(
            (out.len(), err),
            (5 << 20, Some(DecodeError::TooLarge(5 << 20)))
        );
    }

    #[test]
    fn bomb_is_capped_and_corrupt_gives_up() {
        let zeros = vec![0u8; 10 << 20];
        let zs = zstd::stream::encode_all(&zeros[..], 3).unwrap();
        let (out, err) = run(Some("zstd"), &zs, 1024, 1 << 20);
        assert!(out.len() <= 1 << 20);
        assert_eq!(err, Some(DecodeError::TooLarge(1 << 20)));
        let (_, err) = run(Some("gzip"), b"definitely not gzip", 4, usize::MAX);
        assert_eq!(err, Some(DecodeError::Corrupt("gzip")));
        let (_, err) = run(Some("snappy"), b"x", 4, usize::MAX);
        assert!(matches!(err, Some(DecodeError::Unsupported(_))));
    }
}
