//! Substrings: GETRANGE (and its old name SUBSTR) and SETRANGE, with Redis' index rules.

use alloc::vec::Vec;

use crate::commands::{int_arg, out_of_memory, wrong_args, Ctx};
use crate::reply;
use crate::string_cmds::length_ok;

/// The byte range GETRANGE returns for `start..=end` of a `len`-byte value
/// (negative indexes count from the end; out-of-range ends are clamped), or None for
/// the empty string. Redis' `getrangeCommand`, step by step.
pub(crate) fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let len_i = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if start < 0 { start.saturating_add(len_i) } else { start }.max(0);
    let mut end = if end < 0 { end.saturating_add(len_i) } else { end }.max(0);
    if end >= len_i {
        end = len_i.saturating_sub(1);
    }
    if start > end || len == 0 {
        return None;
    }
    Some((usize::try_from(start).ok()?, usize::try_from(end).ok()?))
}

pub(crate) fn getrange(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, start, end] = args else {
        return wrong_args(ctx.out, "getrange");
    };
    let Some(start) = int_arg(ctx.out, start) else {
        return;
    };
    let Some(end) = int_arg(ctx.out, end) else {
        return;
    };
    let value = ctx.store.get(key, ctx.now_ms).unwrap_or(&[]);
    let slice = clamp_range(start, end, value.len()).and_then(|(s, e)| value.get(s..=e)).unwrap_or(&[]);
    reply::bulk(ctx.out, slice);
}

pub(crate) fn setrange(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let [_, key, offset, bytes] = args else {
        return wrong_args(ctx.out, "setrange");
    };
    let Some(offset) = int_arg(ctx.out, offset) else {
        return;
    };
    let Ok(offset) = usize::try_from(offset) else {
        return reply::error(ctx.out, b"ERR offset is out of range");
    };
    let current = ctx.store.get(key, ctx.now_ms).map(<[u8]>::len);
    if bytes.is_empty() {
        // Setting nothing: the current length (0 for a missing key), nothing created.
        return reply::int(ctx.out, current.map_or(0, |len| i64::try_from(len).unwrap_or(i64::MAX)));
    }
    if !length_ok(ctx, offset, bytes.len()) {
        return;
    }
    match ctx.store.set_range(key, offset, bytes, ctx.now_ms) {
        Ok(len) => reply::int(ctx.out, i64::try_from(len).unwrap_or(i64::MAX)),
        Err(_) => out_of_memory(ctx.out),
    }
}

#[cfg(test)]
mod tests {
    use super::clamp_range;

    #[test]
    fn ranges_follow_redis_rules() {
        assert_eq!(clamp_range(0, -1, 5), Some((0, 4)));
        assert_eq!(clamp_range(-3, -1, 5), Some((2, 4)));
        assert_eq!(clamp_range(-1, -3, 5), None);
        assert_eq!(clamp_range(3, 100, 5), Some((3, 4)));
        assert_eq!(clamp_range(10, 100, 5), None);
        assert_eq!(clamp_range(-100, 1, 5), Some((0, 1)));
        assert_eq!(clamp_range(0, 0, 0), None);
        assert_eq!(clamp_range(i64::MIN, i64::MAX, 5), Some((0, 4)));
    }
}
