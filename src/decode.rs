//! Content decoding for observers only: gzip, deflate, br and zstd.
//!
//! The client always gets the encoded bytes untouched; this module turns a
//! copy into plain bytes for the parsers. Decoding is incremental (push:
//! feed encoded frames, get decoded pieces) and capped: past
//! `max_decoded_bytes`, or on corrupt input or an unknown encoding, it gives
//! up for good and the observer records what it had.

use std::io::Write;

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

enum Inner {
    Identity,
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
    Deflate(Box<flate2::write::ZlibDecoder<Vec<u8>>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
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
            Some("gzip") | Some("x-gzip") => {
                Inner::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Vec::new())))
            }
            Some("deflate") => {
                Inner::Deflate(Box::new(flate2::write::ZlibDecoder::new(Vec::new())))
            }
            Some("br") => Inner::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                4096,
            ))),
            Some("zstd") => match zstd::stream::write::Decoder::new(Vec::new()) {
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
        let result = match &mut self.inner {
            Inner::Failed(_) => return,
            Inner::Identity => {
                self.decoded += input.len();
                out(input);
                return;
            }
            Inner::Gzip(d) => write_and_drain(&mut **d, input, "gzip", |d| d.get_mut()),
            Inner::Deflate(d) => write_and_drain(&mut **d, input, "deflate", |d| d.get_mut()),
            Inner::Brotli(d) => write_and_drain(&mut **d, input, "br", |d| d.get_mut()),
            Inner::Zstd(d) => write_and_drain(&mut **d, input, "zstd", |d| d.get_mut()),
        };
        match result {
            Ok(buf) => {
                self.decoded += buf.len();
                if self.decoded > self.max_decoded_bytes {
                    self.inner = Inner::Failed(DecodeError::TooLarge(self.max_decoded_bytes));
                    return;
                }
                if !buf.is_empty() {
                    out(&buf);
                }
            }
            Err(e) => self.inner = Inner::Failed(e),
        }
    }
}

/// Writes `input` into a push decoder and takes what it produced.
fn write_and_drain<W: Write>(
    decoder: &mut W,
    input: &[u8],
    name: &'static str,
    sink: impl Fn(&mut W) -> &mut Vec<u8>,
) -> Result<Vec<u8>, DecodeError> {
    decoder
        .write_all(input)
        .and_then(|_| decoder.flush())
        .map_err(|_| DecodeError::Corrupt(name))?;
    Ok(std::mem::take(sink(decoder)))
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
