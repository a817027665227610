//! Incremental RESP2 request parsing: arrays of bulk strings and inline commands.
//!
//! The parser is stateless: it looks at the bytes buffered so far and either returns one
//! complete command, or says how many bytes it needs before it is worth looking again.
//! That hint makes re-parsing cheap (a large value arriving in many TCP segments is only
//! re-examined once all of it is present), and it keeps every allocation proportional to
//! bytes that actually arrived rather than to lengths the client merely announced.

use alloc::vec::Vec;

use crate::Limits;

/// Longest `*N` / `$N` header line (digits plus sign) we accept; real ones are a few bytes.
const HEADER_MAX: usize = 32;

/// Longest inline command line, as in Redis (`PROTO_INLINE_MAX_SIZE`).
const INLINE_MAX: usize = 64 * 1024;

/// What the buffered bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// One complete command (never empty); its request occupies `consumed` bytes.
    Command { args: Vec<Vec<u8>>, consumed: usize },
    /// Bytes that carry no command (blank inline line, `*0`, `*-1`): drop them silently.
    Nothing { consumed: usize },
    /// Not complete; nothing can change until the buffer holds at least `need` bytes.
    Incomplete { need: usize },
    /// Malformed or oversized: the full error text, e.g. `ERR Protocol error: ...`.
    Error(Vec<u8>),
}

/// Parse the first request in `buf`.
pub(crate) fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    match buf.first() {
        None => Parsed::Incomplete { need: 1 },
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn protocol_error(what: &str) -> Parsed {
    let mut text = Vec::from(&b"ERR Protocol error: "[..]);
    text.extend_from_slice(what.as_bytes());
    Parsed::Error(text)
}

/// A `*N\r\n` or `$N\r\n` line starting at `start` (the type byte).
enum Header {
    Incomplete,
    TooLong,
    /// The number (`None` when not a valid integer) and the offset just past the CRLF.
    Value(Option<i64>, usize),
}

fn header(buf: &[u8], start: usize) -> Header {
    let digits_start = start.saturating_add(1);
    let rest = buf.get(digits_start..).unwrap_or(&[]);
    let window = rest.get(..HEADER_MAX).unwrap_or(rest);
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() >= HEADER_MAX { Header::TooLong } else { Header::Incomplete };
    };
    let lf_at = digits_start.saturating_add(cr).saturating_add(1);
    match buf.get(lf_at) {
        None => Header::Incomplete,
        Some(b'\n') => Header::Value(window.get(..cr).and_then(parse_i64), lf_at.saturating_add(1)),
        Some(_) => Header::Value(None, lf_at),
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Parsed {
    let (count, mut pos) = match header(buf, 0) {
        Header::Incomplete => return need_more(buf),
        Header::TooLong => return protocol_error("too big mbulk count string"),
        Header::Value(None, _) => return protocol_error("invalid multibulk length"),
        Header::Value(Some(n), pos) => (n, pos),
    };
    if count <= 0 {
        // Redis treats `*0` and `*-1` as an empty request and silently skips it.
        return Parsed::Nothing { consumed: pos };
    }
    if usize::try_from(count).map_or(true, |n| n > limits.max_args) {
        return protocol_error("invalid multibulk length");
    }
    // Grows only with arguments actually present, never with the announced count.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for _ in 0..count {
        match bulk(buf, pos, limits) {
            Ok(span) => {
                pos = span.1.saturating_add(2);
                spans.push(span);
            }
            Err(parsed) => return parsed,
        }
    }
    let mut args = Vec::new();
    if args.try_reserve_exact(spans.len()).is_err() {
        return out_of_memory();
    }
    for (from, to) in spans {
        let bytes = buf.get(from..to).unwrap_or(&[]);
        let mut arg = Vec::new();
        // A multi-MiB value is copied here: fail the request, not the whole guest.
        if arg.try_reserve_exact(bytes.len()).is_err() {
            return out_of_memory();
        }
        arg.extend_from_slice(bytes);
        args.push(arg);
    }
    Parsed::Command { args, consumed: pos }
}

/// One `$len\r\ndata\r\n` at `pos`; returns the data span, or what to report instead.
fn bulk(buf: &[u8], pos: usize, limits: &Limits) -> Result<(usize, usize), Parsed> {
    match buf.get(pos) {
        None => return Err(Parsed::Incomplete { need: pos.saturating_add(1) }),
        Some(b'$') => {}
        Some(&other) => {
            let mut text = Vec::from(&b"ERR Protocol error: expected '$', got '"[..]);
            text.push(other);
            text.push(b'\'');
            return Err(Parsed::Error(text));
        }
    }
    let (len, data_start) = match header(buf, pos) {
        Header::Incomplete => return Err(need_more(buf)),
        Header::TooLong => return Err(protocol_error("too big bulk count string")),
        Header::Value(None, _) => return Err(protocol_error("invalid bulk length")),
        Header::Value(Some(len), at) => (len, at),
    };
    let len = match usize::try_from(len) {
        Ok(len) if len <= limits.max_bulk_bytes => len,
        _ => return Err(protocol_error("invalid bulk length")),
    };
    let data_end = data_start.saturating_add(len);
    let next = data_end.saturating_add(2);
    if next > limits.max_request_bytes {
        return Err(protocol_error("too big request"));
    }
    match buf.get(data_end..next) {
        None => Err(Parsed::Incomplete { need: next }),
        Some(b"\r\n") => Ok((data_start, data_end)),
        Some(_) => Err(protocol_error("expected CRLF after bulk data")),
    }
}

fn out_of_memory() -> Parsed {
    Parsed::Error(Vec::from(&b"OOM not enough free memory to hold this request; retry, or send smaller values"[..]))
}

fn need_more(buf: &[u8]) -> Parsed {
    Parsed::Incomplete { need: buf.len().saturating_add(1) }
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Parsed {
    let max = INLINE_MAX.min(limits.max_request_bytes);
    let window = buf.get(..max.saturating_add(1)).unwrap_or(buf);
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > max { protocol_error("too big inline request") } else { need_more(buf) };
    };
    let line = window.get(..lf).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let consumed = lf.saturating_add(1);
    match split_args(line) {
        None => protocol_error("unbalanced quotes in request"),
        Some(args) if args.is_empty() => Parsed::Nothing { consumed },
        Some(args) if args.len() > limits.max_args => protocol_error("invalid multibulk length"),
        Some(args) => Parsed::Command { args, consumed },
    }
}

/// Split an inline line the way Redis' `sdssplitargs` does: whitespace separated, with
/// "double quotes" (C-like escapes, `\xHH`) and 'single quotes' (only `\'`).
/// `None` for unbalanced quotes or a closing quote not followed by a space.
pub(crate) fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // Redis works on a C string here, so a NUL byte ends the line.
    let line = line.split(|&b| b == 0).next().unwrap_or(&[]);
    let mut args = Vec::new();
    let mut pos = 0usize;
    loop {
        while line.get(pos).is_some_and(|b| is_space(*b)) {
            pos = pos.saturating_add(1);
        }
        if pos >= line.len() {
            return Some(args);
        }
        let (arg, next) = split_one(line, pos)?;
        if next <= pos {
            // Cannot happen (every stop byte is whitespace), but never loop forever.
            return Some(args);
        }
        args.push(arg);
        pos = next;
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// One argument starting at `pos` (not whitespace); returns it and the offset after it.
fn split_one(line: &[u8], mut pos: usize) -> Option<(Vec<u8>, usize)> {
    let mut arg = Vec::new();
    loop {
        match line.get(pos) {
            None | Some(b' ' | b'\n' | b'\r' | b'\t' | 0) => return Some((arg, pos)),
            Some(b'"') => pos = quoted(line, pos.saturating_add(1), &mut arg)?,
            Some(b'\'') => pos = single_quoted(line, pos.saturating_add(1), &mut arg)?,
            Some(&b) => {
                arg.push(b);
                pos = pos.saturating_add(1);
            }
        }
    }
}

/// Inside "...": returns the offset after the closing quote.
fn quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Option<usize> {
    loop {
        let at = |k: usize| line.get(pos.saturating_add(k)).copied();
        match at(0)? {
            b'\\' if at(1) == Some(b'x') && hex_pair(at(2), at(3)).is_some() => {
                arg.extend(hex_pair(at(2), at(3)));
                pos = pos.saturating_add(4);
            }
            b'\\' if at(1).is_some() => {
                arg.push(match at(1)? {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => other,
                });
                pos = pos.saturating_add(2);
            }
            b'"' => return after_closing_quote(line, pos),
            b => {
                arg.push(b);
                pos = pos.saturating_add(1);
            }
        }
    }
}

/// Inside '...': returns the offset after the closing quote.
fn single_quoted(line: &[u8], mut pos: usize, arg: &mut Vec<u8>) -> Option<usize> {
    loop {
        let at = |k: usize| line.get(pos.saturating_add(k)).copied();
        match at(0)? {
            b'\\' if at(1) == Some(b'\'') => {
                arg.push(b'\'');
                pos = pos.saturating_add(2);
            }
            b'\'' => return after_closing_quote(line, pos),
            b => {
                arg.push(b);
                pos = pos.saturating_add(1);
            }
        }
    }
}

/// A closing quote must end the argument (Redis rejects `"a"b`).
fn after_closing_quote(line: &[u8], quote_at: usize) -> Option<usize> {
    let next = quote_at.saturating_add(1);
    match line.get(next) {
        None => Some(next),
        Some(&b) if is_space(b) => Some(next),
        Some(_) => None,
    }
}

fn hex_pair(hi: Option<u8>, lo: Option<u8>) -> Option<u8> {
    let digit = |c: Option<u8>| char::from(c?).to_digit(16);
    let value = digit(hi)?.checked_mul(16)?.checked_add(digit(lo)?)?;
    u8::try_from(value).ok()
}

/// Strict integer parsing, as Redis' `string2ll`: optional `-`, no `+`, no leading zeros,
/// no spaces, no `-0`, and within i64.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) || digits.len() > 19 {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &d in digits {
        let digit = char::from(d).to_digit(10)?;
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn limits() -> Limits {
        Limits::default()
    }

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn array_request_parses_into_arguments() {
        let parsed = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest", &limits());
        assert_eq!(parsed, Parsed::Command { args: words(&["GET", "k"]), consumed: 20 });
    }

    #[test]
    fn partial_bulk_reports_exact_bytes_needed() {
        let parsed = parse(b"*1\r\n$10\r\nabc", &limits());
        assert_eq!(parsed, Parsed::Incomplete { need: 4 + 5 + 12 });
    }

    #[test]
    fn inline_request_splits_on_spaces_and_quotes() {
        let parsed = parse(b"SET  \"a b\\x41\" 'it\\'s'\r\n", &limits());
        assert_eq!(
            parsed,
            Parsed::Command { args: vec![b"SET".to_vec(), b"a bA".to_vec(), b"it's".to_vec()], consumed: 24 }
        );
    }

    #[test]
    fn inline_nul_byte_ends_the_line_like_redis() {
        assert_eq!(split_args(b"GET a\0b c"), Some(words(&["GET", "a"])));
        assert_eq!(split_args(b"\0GET"), Some(vec![]));
    }

    #[test]
    fn inline_unbalanced_quotes_is_protocol_error() {
        assert!(matches!(parse(b"GET \"abc\r\n", &limits()), Parsed::Error(_)));
        assert!(matches!(parse(b"GET \"a\"b\r\n", &limits()), Parsed::Error(_)));
    }

    #[test]
    fn empty_array_and_blank_line_are_skipped() {
        assert_eq!(parse(b"*0\r\n", &limits()), Parsed::Nothing { consumed: 4 });
        assert_eq!(parse(b"*-1\r\n", &limits()), Parsed::Nothing { consumed: 5 });
        assert_eq!(parse(b"\r\n", &limits()), Parsed::Nothing { consumed: 2 });
    }

    #[test]
    fn bulk_length_over_request_limit_is_rejected_before_data_arrives() {
        let parsed = parse(b"*1\r\n$999999999\r\n", &limits());
        assert_eq!(parsed, Parsed::Error(b"ERR Protocol error: invalid bulk length".to_vec()));
    }

    #[test]
    fn integer_parsing_matches_redis_strictness() {
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [&b""[..], b"9223372036854775808", b"-0", b"01", b"+1", b" 1", b"1 ", b"-", b"1a"] {
            assert_eq!(parse_i64(bad), None, "{:?}", bad);
        }
    }
}
