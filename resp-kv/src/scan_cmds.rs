//! Walking and describing keys: KEYS, SCAN, OBJECT ENCODING.

use alloc::vec::Vec;

use crate::commands::{int_arg, is, syntax_error, unknown_subcommand, Ctx};
use crate::reply;

/// KEYS pattern: every live key matching the Redis glob, in hash order.
pub(crate) fn keys(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let pattern = args.get(1).map_or(&[][..], Vec::as_slice);
    // Count first, then write: the array header needs the count, and a copy of every
    // matching key would double the memory a large keyspace's listing takes.
    let n = ctx.store.for_each_matching(pattern, ctx.now_ms, |_| {});
    reply::array_header(ctx.out, n);
    let out = &mut *ctx.out;
    ctx.store.for_each_matching(pattern, ctx.now_ms, |key| reply::bulk(out, key));
}

/// SCAN's cursor as Redis reads it (`strtoul`): optional sign, decimal digits, no
/// leading space; `-n` wraps around, "" is 0.
pub(crate) fn parse_cursor(text: &[u8]) -> Option<u64> {
    if text.first().is_some_and(|b| b.is_ascii_whitespace() || *b == 0x0b) {
        return None;
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        // strtoul converts nothing; Redis then accepts only the empty string (as 0).
        return text.is_empty().then_some(0);
    }
    let mut value: u64 = 0;
    for &d in digits {
        let digit = char::from(d).to_digit(10)?;
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(if negative { value.wrapping_neg() } else { value })
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
pub(crate) fn scan(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let Some(cursor) = args.get(1).and_then(|c| parse_cursor(c)) else {
        return reply::error(ctx.out, b"ERR invalid cursor");
    };
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut type_name: Option<&[u8]> = None;
    let mut i = 2usize;
    while let Some(opt) = args.get(i) {
        let value = args.get(i.saturating_add(1));
        match value {
            Some(v) if is(opt, "COUNT") => {
                let Some(n) = int_arg(ctx.out, v) else {
                    return;
                };
                if n < 1 {
                    return syntax_error(ctx.out);
                }
                count = usize::try_from(n).unwrap_or(usize::MAX);
            }
            Some(v) if is(opt, "MATCH") => pattern = Some(v).filter(|p| p.as_slice() != b"*").map(Vec::as_slice),
            Some(v) if is(opt, "TYPE") => type_name = Some(v),
            _ => return syntax_error(ctx.out),
        }
        i = i.saturating_add(2);
    }
    let page = ctx.store.scan(cursor, count, pattern, type_name, ctx.now_ms);
    reply::array_header(ctx.out, 2);
    let mut text = Vec::new();
    reply::push_u64(&mut text, page.cursor);
    reply::bulk(ctx.out, &text);
    reply::array_header(ctx.out, page.keys.len());
    page.keys.iter().for_each(|k| reply::bulk(ctx.out, k));
}

/// OBJECT ENCODING key: how Redis would hold the value (int, embstr or raw).
pub(crate) fn object(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    match args {
        [_, sub, key] if is(sub, "ENCODING") => {
            let enc = ctx.store.entry(key, ctx.now_ms).map(|e| e.enc.name());
            reply::opt_bulk(ctx.out, enc.map(str::as_bytes));
        }
        [_, sub, ..] => unknown_subcommand(ctx.out, sub, "OBJECT"),
        _ => crate::commands::wrong_args(ctx.out, "object"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cursor;

    #[test]
    fn cursor_parsing_matches_strtoul_as_redis_uses_it() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b"007"), Some(7));
        assert_eq!(parse_cursor(b"+5"), Some(5));
        assert_eq!(parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b"18446744073709551616"[..], b" 1", b"1 ", b"x", b"-", b"+", b"1x"] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }
}
