//! The framing layer shared by log records and channel messages:
//! `len: u32 LE | tag: u8 | payload | crc32: u32 LE`, where `len` counts
//! tag+payload and the CRC covers tag+payload.

use std::io::{self, Read};

use super::CodecError;
use crate::MAX_FRAME_LEN;

pub(crate) const LEN_BYTES: usize = 4;
pub(crate) const CRC_BYTES: usize = 4;

/// Appends one frame to `out`; `body` writes tag+payload.
pub(crate) fn write_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    body(out);
    let body_len = out.len() - start - LEN_BYTES;
    // A body too long for u32 saturates, so the decoder rejects it as
    // oversized instead of reading a wrapped-around, plausible length.
    let len = u32::try_from(body_len).unwrap_or(u32::MAX);
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[start + LEN_BYTES..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Validates a length prefix before anything is allocated for it.
pub(crate) fn check_len(len: u32) -> Result<usize, CodecError> {
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len == 0 {
        Err(CodecError::EmptyFrame)
    } else if len_usize > MAX_FRAME_LEN {
        Err(CodecError::FrameTooLarge { len: len.into() })
    } else {
        Ok(len_usize)
    }
}

fn check_crc(body: &[u8], crc_bytes: [u8; CRC_BYTES]) -> Result<(), CodecError> {
    let expected = u32::from_le_bytes(crc_bytes);
    let found = crc32fast::hash(body);
    if expected == found {
        Ok(())
    } else {
        Err(CodecError::BadChecksum { expected, found })
    }
}

/// Splits one checked frame off the front of `buf`, returning tag+payload and
/// the number of bytes consumed, or `Ok(None)` if `buf` holds only a prefix.
pub(crate) fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, CodecError> {
    let Some((len_bytes, rest)) = buf.split_first_chunk::<LEN_BYTES>() else {
        return Ok(None);
    };
    let len = check_len(u32::from_le_bytes(*len_bytes))?;
    if rest.len() < len + CRC_BYTES {
        return Ok(None);
    }
    let (body, rest) = rest.split_at(len);
    let crc: [u8; CRC_BYTES] = rest[..CRC_BYTES].try_into().expect("length checked");
    check_crc(body, crc)?;
    Ok(Some((body, LEN_BYTES + len + CRC_BYTES)))
}

/// Reads one checked frame from `r` into `body` (tag+payload).
///
/// Returns `Ok(false)` only at a clean end of stream before the first byte of
/// a frame; an end of stream anywhere else is [`CodecError::Truncated`].
pub(crate) fn read_frame<R: Read>(r: &mut R, body: &mut Vec<u8>) -> Result<bool, CodecError> {
    let mut len_bytes = [0u8; LEN_BYTES];
    match read_full(r, &mut len_bytes)? {
        0 => return Ok(false),
        LEN_BYTES => {}
        _ => return Err(CodecError::Truncated),
    }
    let len = check_len(u32::from_le_bytes(len_bytes))?;
    body.clear();
    // `take` + `read_to_end` grows the buffer only as bytes actually arrive,
    // so a hostile length prefix cannot make us allocate a full frame up front.
    let want = (len + CRC_BYTES) as u64;
    let got = r.by_ref().take(want).read_to_end(body).map_err(io_error)?;
    if got < len + CRC_BYTES {
        return Err(CodecError::Truncated);
    }
    let crc: [u8; CRC_BYTES] = body[len..].try_into().expect("length checked");
    body.truncate(len);
    check_crc(body, crc)?;
    Ok(true)
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, CodecError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    Ok(filled)
}

fn io_error(e: io::Error) -> CodecError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        CodecError::Truncated
    } else {
        CodecError::Io(e)
    }
}

/// A bounds-checked reader over one frame's tag+payload. Running past the end
/// is a [`CodecError::Malformed`] naming the field, never a panic.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &str) -> Result<&'a [u8], CodecError> {
        if n > self.buf.len() {
            return Err(CodecError::Malformed {
                what: format!("{field} needs {n} bytes but only {} remain in the frame", self.buf.len()),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], CodecError> {
        Ok(self.bytes(N, field)?.try_into().expect("length checked"))
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn hash(&mut self, field: &str) -> Result<crate::Hash, CodecError> {
        self.array(field)
    }

    pub(crate) fn bool(&mut self, field: &str) -> Result<bool, CodecError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(CodecError::Malformed { what: format!("{field} flag is {other}, expected 0 or 1") }),
        }
    }

    /// Reads a `u32` item count and rejects it if even `min_item_len`-byte
    /// items could not fit in the rest of the frame, so callers may size an
    /// allocation by it.
    pub(crate) fn count(&mut self, field: &str, min_item_len: usize) -> Result<usize, CodecError> {
        let count = self.u32(field)?;
        let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
        if count_usize.saturating_mul(min_item_len) > self.buf.len() {
            return Err(CodecError::Malformed {
                what: format!("{field} is {count} but only {} bytes remain in the frame", self.buf.len()),
            });
        }
        Ok(count_usize)
    }

    /// Asserts the whole frame was consumed.
    pub(crate) fn finish(self, what: &str) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed { what: format!("{} trailing bytes after {what}", self.buf.len()) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_rejects_counts_that_cannot_fit_in_the_frame() {
        let buf = [3, 0, 0, 0, 1, 2, 3, 4, 5];
        let mut c = Cursor::new(&buf);

        let err = c.count("items", 2).unwrap_err();

        assert!(matches!(err, CodecError::Malformed { .. }));
    }

    #[test]
    fn cursor_accepts_counts_that_fit_exactly() {
        let buf = [2, 0, 0, 0, 1, 2, 3, 4];
        let mut c = Cursor::new(&buf);

        assert_eq!(c.count("items", 2).unwrap(), 2);
    }

    #[test]
    fn cursor_reading_past_the_end_names_the_field() {
        let mut c = Cursor::new(&[1, 2]);

        let err = c.u32("widget id").unwrap_err();

        assert!(err.to_string().contains("widget id"), "{err}");
    }

    #[test]
    fn cursor_finish_reports_trailing_bytes() {
        let mut c = Cursor::new(&[1, 2, 3]);
        c.u8("tag").unwrap();

        assert!(c.finish("progress").is_err());
    }

    #[test]
    fn stream_with_partial_length_prefix_is_truncated() {
        let mut body = Vec::new();

        let result = read_frame(&mut &[5u8, 0][..], &mut body);

        assert!(matches!(result, Err(CodecError::Truncated)));
    }
}
