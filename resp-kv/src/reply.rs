//! RESP2 reply encoding, byte-for-byte as Redis writes it.

use alloc::vec::Vec;

/// `+text\r\n`
pub(crate) fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `+OK\r\n`
pub(crate) fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

/// An error reply. `text` carries its own prefix word (`ERR`, `OOM`, `NOPROTO`...).
/// CR and LF become spaces, as Redis does, because error text may echo client bytes
/// and a stray line break would desynchronise the client's parser.
pub(crate) fn error(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'-');
    out.extend(text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.extend_from_slice(b"\r\n");
}

/// `:n\r\n`
pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_i64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$len\r\nbytes\r\n`; an `-OOM` error in its place when the guest has no room for
/// a copy of a large value (replies are built in memory before they are sent).
pub(crate) fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    if out.try_reserve(bytes.len().saturating_add(24)).is_err() {
        return error(out, b"OOM not enough free memory for this reply; retry later");
    }
    out.push(b'$');
    push_u64(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Bulk string, or the RESP2 nil bulk `$-1` for `None`.
pub(crate) fn opt_bulk(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => bulk(out, b),
        None => nil(out),
    }
}

/// `$-1\r\n`
pub(crate) fn nil(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*n\r\n`; the caller then writes `n` elements.
pub(crate) fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_u64(out, n as u64);
    out.extend_from_slice(b"\r\n");
}

/// Decimal text of a signed integer (i64::MIN included).
pub(crate) fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// Decimal text of an unsigned integer, without going through `core::fmt`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start = start.saturating_sub(1);
        if let Some(slot) = digits.get_mut(start) {
            // n % 10 < 10, so the sum fits in a u8.
            *slot = b'0'.wrapping_add((n % 10) as u8);
        }
        n /= 10;
        if n == 0 || start == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or(&[]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_format_like_redis_including_extremes() {
        let mut out = Vec::new();
        int(&mut out, 0);
        int(&mut out, -1);
        int(&mut out, i64::MAX);
        int(&mut out, i64::MIN);
        assert_eq!(out, b":0\r\n:-1\r\n:9223372036854775807\r\n:-9223372036854775808\r\n");
    }

    #[test]
    fn error_text_has_line_breaks_flattened() {
        let mut out = Vec::new();
        error(&mut out, b"ERR a\r\nb");
        assert_eq!(out, b"-ERR a  b\r\n");
    }

    #[test]
    fn bulk_and_nil_frame_correctly() {
        let mut out = Vec::new();
        bulk(&mut out, b"hi");
        opt_bulk(&mut out, None);
        bulk(&mut out, b"");
        assert_eq!(out, b"$2\r\nhi\r\n$-1\r\n$0\r\n\r\n");
    }
}
