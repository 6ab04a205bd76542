//! The IDX file format (LeCun's MNIST container): a big-endian header, then raw `u8` data.
//!
//! Header: two zero bytes, a type byte (`0x08` = unsigned byte), the number of dimensions,
//! then one big-endian `u32` per dimension. Images are `0x00000803` (count, rows, cols),
//! labels `0x00000801` (count). Every size is checked before anything is allocated, and the
//! payload must match the header exactly: no truncation, no trailing bytes.
//!
//! Files may be plain or gzip-compressed; decompression is capped so that a gzip bomb is
//! refused instead of swallowed.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{DatasetError, Result};

/// Magic number of an IDX file of unsigned-byte images: 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels: 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Default cap on a decompressed IDX file. The largest MNIST file is 47,040,016 bytes.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const UNSIGNED_BYTE_TYPE: u8 = 0x08;

/// Decoded IDX images: `count` images of `rows x cols` pixels, row-major, one byte each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// A parsed header: the dimensions and the total file length they imply.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    dims: Vec<u64>,
    header_len: usize,
    total_len: u64,
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

/// Parses the header at the start of `bytes`, expecting `expected_dims` dimensions.
/// Fails on a short header, a wrong magic number or sizes that overflow.
fn parse_header(
    bytes: &[u8],
    origin: &str,
    expected_magic: u32,
    kind: &'static str,
) -> Result<Header> {
    let truncated = |expected: u64| DatasetError::Truncated {
        origin: origin.to_string(),
        expected,
        found: bytes.len() as u64,
    };
    let magic = be_u32(bytes, 0).ok_or_else(|| truncated(4))?;
    let expected_dims = (expected_magic & 0xff) as usize;
    let is_ubyte_idx = magic >> 8 == u32::from(UNSIGNED_BYTE_TYPE);
    if magic != expected_magic {
        // Right family, wrong rank: say so rather than "wrong magic".
        if is_ubyte_idx {
            return Err(DatasetError::DimensionMismatch {
                origin: origin.to_string(),
                detail: format!(
                    "IDX header declares {} dimensions, an IDX {kind} file has {expected_dims}",
                    magic & 0xff
                ),
            });
        }
        return Err(DatasetError::WrongMagic {
            origin: origin.to_string(),
            expected_kind: kind,
            expected: expected_magic,
            found: magic,
        });
    }
    let header_len = 4 + 4 * expected_dims;
    let dims = (0..expected_dims)
        .map(|i| be_u32(bytes, 4 + 4 * i).map(u64::from))
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| truncated(header_len as u64))?;
    // Three u32 factors cannot overflow u128; a total past u64 saturates (and is then
    // refused as truncated or too large, never allocated).
    let payload: u128 = dims.iter().map(|&d| u128::from(d)).product();
    let total_len = u64::try_from(payload + header_len as u128).unwrap_or(u64::MAX);
    Ok(Header {
        dims,
        header_len,
        total_len,
    })
}

/// Checks that `bytes` is exactly as long as the header says.
fn check_length(bytes: &[u8], header: &Header, origin: &str) -> Result<()> {
    let found = bytes.len() as u64;
    if found < header.total_len {
        return Err(DatasetError::Truncated {
            origin: origin.to_string(),
            expected: header.total_len,
            found,
        });
    }
    if found > header.total_len {
        return Err(DatasetError::TrailingBytes {
            origin: origin.to_string(),
            expected: header.total_len,
            extra: found - header.total_len,
        });
    }
    Ok(())
}

/// Parses an IDX image file held in memory. Takes the buffer by value to reuse it for the
/// pixels (the header is drained, no second copy of the payload is made).
pub fn parse_images(mut bytes: Vec<u8>, origin: &str) -> Result<IdxImages> {
    let header = parse_header(&bytes, origin, IMAGES_MAGIC, "images")?;
    check_length(&bytes, &header, origin)?;
    let dim = |i: usize| usize::try_from(header.dims[i]).unwrap_or(usize::MAX);
    let (count, rows, cols) = (dim(0), dim(1), dim(2));
    if count > 0 && (rows == 0 || cols == 0) {
        return Err(DatasetError::DimensionMismatch {
            origin: origin.to_string(),
            detail: format!("{count} images of {rows}x{cols} pixels: an image needs pixels"),
        });
    }
    bytes.drain(..header.header_len);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: bytes,
    })
}

/// Parses an IDX label file held in memory; every label must be a digit 0..=9.
pub fn parse_labels(mut bytes: Vec<u8>, origin: &str) -> Result<Vec<u8>> {
    let header = parse_header(&bytes, origin, LABELS_MAGIC, "labels")?;
    check_length(&bytes, &header, origin)?;
    bytes.drain(..header.header_len);
    if let Some((index, &label)) = bytes.iter().enumerate().find(|(_, l)| **l > 9) {
        return Err(DatasetError::BadLabel {
            origin: origin.to_string(),
            index,
            label,
        });
    }
    Ok(bytes)
}

/// Encodes images as an IDX file (for tests, tools and the cache).
pub fn encode_images(rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let count = pixels.len().checked_div(rows * cols).unwrap_or(0);
    let mut out = Vec::with_capacity(16 + pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for d in [count, rows, cols] {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes labels as an IDX file.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Reads at most `max_bytes` from `reader`, failing with `TooLarge` past that.
///
/// If the first bytes form a valid IDX header that already claims more than `max_bytes`,
/// the read stops there: an absurd header is refused before anything large is allocated.
fn read_capped(mut reader: impl Read, origin: &str, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let too_large = || std::io::Error::other(CapExceeded);
    let mut prefix = Vec::with_capacity(16);
    (&mut reader).take(16).read_to_end(&mut prefix)?;
    let claimed = [IMAGES_MAGIC, LABELS_MAGIC]
        .into_iter()
        .find_map(|magic| parse_header(&prefix, origin, magic, "").ok())
        .map(|h| h.total_len);
    if claimed.is_some_and(|len| len > max_bytes) {
        return Err(too_large());
    }
    let mut bytes = prefix;
    bytes.reserve(claimed.unwrap_or(0).saturating_sub(16) as usize);
    let remaining = (max_bytes + 1).saturating_sub(bytes.len() as u64);
    reader.take(remaining).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Marker error carried inside `io::Error` by [`read_capped`].
#[derive(Debug)]
struct CapExceeded;
impl std::fmt::Display for CapExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("size cap exceeded")
    }
}
impl std::error::Error for CapExceeded {}

fn is_cap_exceeded(err: &std::io::Error) -> bool {
    err.get_ref().is_some_and(|e| e.is::<CapExceeded>())
}

/// Returns the IDX bytes in `raw`: decompressed if `raw` is gzip, as is otherwise.
/// Decompression stops with `TooLarge` past `max_bytes`.
pub fn decompress(raw: Vec<u8>, origin: &str, max_bytes: u64) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        if raw.len() as u64 > max_bytes {
            return Err(DatasetError::TooLarge {
                origin: origin.to_string(),
                limit: max_bytes,
            });
        }
        return Ok(raw);
    }
    read_capped(GzDecoder::new(raw.as_slice()), origin, max_bytes).map_err(|source| {
        if is_cap_exceeded(&source) {
            DatasetError::TooLarge {
                origin: origin.to_string(),
                limit: max_bytes,
            }
        } else {
            DatasetError::Gzip {
                origin: origin.to_string(),
                source,
            }
        }
    })
}

/// Reads an IDX file from disk, plain or gzip, capped at `max_bytes` decompressed.
pub fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| DatasetError::io(&origin, e))?;
    let mut file = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let gz = match file.read_exact(&mut magic) {
        Ok(()) => magic == GZIP_MAGIC,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(DatasetError::io(&origin, e)),
    };
    // Re-chain the two bytes already taken so the parser sees the whole file.
    let seen = &magic[..];
    let result = if gz {
        read_capped(GzDecoder::new(seen.chain(file)), &origin, max_bytes)
    } else {
        read_capped(seen.chain(file), &origin, max_bytes)
    };
    result.map_err(|source| {
        if is_cap_exceeded(&source) {
            DatasetError::TooLarge {
                origin: origin.clone(),
                limit: max_bytes,
            }
        } else if gz {
            DatasetError::Gzip {
                origin: origin.clone(),
                source,
            }
        } else {
            DatasetError::io(&origin, source)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_file(count: u32, rows: u32, cols: u32, payload: usize) -> Vec<u8> {
        let mut b = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [count, rows, cols] {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(7u8, payload));
        b
    }

    #[test]
    fn images_round_trip() {
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let parsed = parse_images(encode_images(3, 4, &pixels), "mem").unwrap();
        assert_eq!((parsed.count, parsed.rows, parsed.cols), (2, 3, 4));
        assert_eq!(parsed.pixels, pixels);
    }

    #[test]
    fn labels_round_trip() {
        let labels = vec![0, 9, 3, 3, 1];
        assert_eq!(parse_labels(encode_labels(&labels), "mem").unwrap(), labels);
    }

    #[test]
    fn truncated_payload_is_refused() {
        let err = parse_images(images_file(2, 2, 2, 7), "f").unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::Truncated {
                    expected: 24,
                    found: 23,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_header_is_refused() {
        for len in 0..16 {
            let bytes = images_file(1, 1, 1, 1)[..len].to_vec();
            let err = parse_images(bytes, "f").unwrap_err();
            assert!(
                matches!(err, DatasetError::Truncated { .. }),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let err = parse_images(images_file(1, 2, 2, 6), "f").unwrap_err();
        assert!(
            matches!(err, DatasetError::TrailingBytes { extra: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_magic_and_wrong_rank_are_distinguished() {
        let mut bytes = images_file(1, 1, 1, 1);
        bytes[3] = 0x01; // a labels header where images are expected
        let err = parse_images(bytes, "f").unwrap_err();
        assert!(
            matches!(err, DatasetError::DimensionMismatch { .. }),
            "{err}"
        );
        let err = parse_labels(b"PK\x03\x04zip!".to_vec(), "f").unwrap_err();
        assert!(matches!(err, DatasetError::WrongMagic { .. }), "{err}");
    }

    #[test]
    fn bad_label_is_refused_with_its_index() {
        let err = parse_labels(encode_labels(&[1, 2, 10]), "f").unwrap_err();
        assert!(
            matches!(
                err,
                DatasetError::BadLabel {
                    index: 2,
                    label: 10,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn zero_sized_images_are_refused() {
        let err = parse_images(images_file(3, 0, 28, 0), "f").unwrap_err();
        assert!(
            matches!(err, DatasetError::DimensionMismatch { .. }),
            "{err}"
        );
    }

    #[test]
    fn absurd_header_is_refused_before_reading_on() {
        // Claims 4e9 x 4e9 x 4e9 bytes; the stream holds only the header.
        let bytes = images_file(u32::MAX, u32::MAX, u32::MAX, 0);
        let err = read_capped(bytes.as_slice(), "f", 1000).unwrap_err();
        assert!(is_cap_exceeded(&err));
        let err = parse_images(bytes, "f").unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
    }

    #[test]
    fn gzip_bomb_is_capped() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        // 10 MB of zeros compresses to ~10 kB; with a 1 MB cap it must be refused.
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(&vec![0u8; 10 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gz.len() < 100_000);
        let err = decompress(gz, "bomb.gz", 1 << 20).unwrap_err();
        assert!(
            matches!(err, DatasetError::TooLarge { limit, .. } if limit == 1 << 20),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_is_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(&encode_labels(&[1, 2, 3])).unwrap();
        let mut gz = enc.finish().unwrap();
        let mid = gz.len() / 2;
        gz[mid] ^= 0xff;
        gz.truncate(gz.len() - 4);
        let err = decompress(gz, "bad.gz", 1 << 20).unwrap_err();
        assert!(matches!(err, DatasetError::Gzip { .. }), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_images(bytes.clone(), "p");
            let _ = parse_labels(bytes.clone(), "p");
            let _ = decompress(bytes, "p", 1 << 16);
        }

        #[test]
        fn any_valid_labels_round_trip(labels in proptest::collection::vec(0u8..10, 0..200)) {
            proptest::prop_assert_eq!(parse_labels(encode_labels(&labels), "p").unwrap(), labels);
        }
    }
}
