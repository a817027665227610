//! INCRBYFLOAT's arithmetic: C `long double` as Redis on x86-64 has it (the x87 80-bit
//! format: 64-bit mantissa, exponents down to 2^-16445 with subnormals, finite below
//! 2^16384), computed exactly with integers.
//!
//! Why not `f64`: Redis parses with `strtold`, adds in 80-bit precision and prints
//! `%.17Lf`; `f64` gives different digits (`10.5 + 0.1` is `10.6` in Redis, and
//! `10.59999999999999964` through `f64`). Why not the x87 unit itself: this crate is
//! pure and `forbid(unsafe_code)`, and the result must not depend on the host's or the
//! guest's FPU state (the guest runs this in ring 3 where SSE and x87 would work, but a
//! replay must give the same bits on any machine). So parsing rounds the exact decimal
//! (or hex) value to the nearest 80-bit value (ties to even, as glibc's `strtold`),
//! addition rounds the exact sum once (as the x87 `fadd` in round-to-nearest), and
//! printing rounds the exact binary value to 17 decimals (ties to even, as glibc's
//! `printf`). Big integers are small here: at most ~33,000 bits.

mod big;

use alloc::vec::Vec;

use big::Big;

/// Exponent of the smallest subnormal: 2^-16445.
const MIN_EXP: i64 = -16445;
/// Every finite value is below 2^16384.
const MAX_BITS: i64 = 16384;
/// Redis refuses float strings this long or longer (`MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;

/// A finite `long double` `(-1)^neg · mant · 2^exp`, or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LongDouble {
    neg: bool,
    mant: u64,
    exp: i64,
    inf: bool,
}

impl LongDouble {
    pub(crate) const ZERO: LongDouble = LongDouble { neg: false, mant: 0, exp: 0, inf: false };
}

/// Round `n · 2^q0` (plus something below its last bit when `sticky`) to a `long
/// double` mantissa and exponent; None on overflow. A zero mantissa is an underflow.
fn round(n: &Big, q0: i64, sticky: bool) -> Option<(u64, i64)> {
    let len = i64::try_from(n.bit_len()).ok()?;
    if len == 0 {
        return Some((0, 0));
    }
    let mut q = q0.saturating_add(len).saturating_sub(64).max(MIN_EXP);
    let shift = q.saturating_sub(q0);
    let mut mant;
    if shift <= 0 {
        mant = n.shl(usize::try_from(shift.saturating_neg()).ok()?).low_u64();
    } else {
        let shift = usize::try_from(shift).ok()?;
        mant = n.shr_low_u64(shift);
        let half = n.bit(shift.saturating_sub(1));
        let rest = sticky || n.any_below(shift.saturating_sub(1));
        if half && (rest || mant & 1 == 1) {
            mant = mant.wrapping_add(1);
            if mant == 0 {
                mant = 1 << 63;
                q = q.saturating_add(1);
            }
        }
    }
    let bits = i64::from(64u32.saturating_sub(mant.leading_zeros()));
    if mant != 0 && bits.saturating_add(q) > MAX_BITS {
        return None;
    }
    Some((mant, q))
}

/// Parse a float the way Redis' `string2ld` accepts it (`strtold` consuming the whole
/// string: sign, decimal or `0x` hex digits with optional point and exponent, `inf`,
/// `infinity`; no spaces, no NaN, nothing out of range). None: "not a valid float".
pub(crate) fn parse(text: &[u8]) -> Option<LongDouble> {
    if text.is_empty() || text.len() >= MAX_CHARS {
        return None;
    }
    let (neg, body) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
        return Some(LongDouble { neg, mant: 0, exp: 0, inf: true });
    }
    let hex = body.len() > 2 && (body.starts_with(b"0x") || body.starts_with(b"0X"));
    let (digits, scale, exp) =
        if hex { split_number(body.get(2..)?, 16, b'p')? } else { split_number(body, 10, b'e')? };
    let (mant, exp) = if hex { from_hex(&digits, scale, exp)? } else { from_decimal(&digits, scale, exp)? };
    Some(LongDouble { neg, mant, exp, inf: false })
}

/// Split `digits[.digits][<e>[sign]digits]` in `radix`: the digit values, how many
/// came after the point, and the exponent (saturated far beyond any finite value).
fn split_number(text: &[u8], radix: u32, exp_char: u8) -> Option<(Vec<u8>, i64, i64)> {
    let mut digits = Vec::new();
    let mut after_point = 0i64;
    let mut seen_point = false;
    let mut rest = text;
    while let Some((&c, tail)) = rest.split_first() {
        if c == b'.' && !seen_point {
            seen_point = true;
        } else if let Some(d) = char::from(c).to_digit(radix) {
            digits.push(u8::try_from(d).ok()?);
            if seen_point {
                after_point = after_point.saturating_add(1);
            }
        } else {
            break;
        }
        rest = tail;
    }
    if digits.is_empty() {
        return None;
    }
    let mut exp = 0i64;
    if let Some((&c, tail)) = rest.split_first() {
        if !c.eq_ignore_ascii_case(&exp_char) {
            return None;
        }
        let (neg, num) = match tail.split_first() {
            Some((b'-', n)) => (true, n),
            Some((b'+', n)) => (false, n),
            _ => (false, tail),
        };
        if num.is_empty() {
            return None;
        }
        for &d in num {
            let d = char::from(d).to_digit(10)?;
            exp = exp.saturating_mul(10).saturating_add(i64::from(d)).min(1 << 40);
        }
        if neg {
            exp = exp.saturating_neg();
        }
    }
    Some((digits, after_point, exp))
}

fn from_decimal(digits: &[u8], after_point: i64, exp: i64) -> Option<(u64, i64)> {
    let significant: &[u8] = match digits.iter().position(|&d| d != 0) {
        Some(first) => digits.get(first..)?,
        None => return Some((0, 0)),
    };
    let e10 = exp.saturating_sub(after_point);
    let magnitude = i64::try_from(significant.len()).ok()?.saturating_add(e10);
    // 10^4933 > 2^16384 overflows; below 10^-4952 < 2^-16446 everything rounds to 0.
    if magnitude > 4934 {
        return None;
    }
    if magnitude < -4952 {
        return None;
    }
    let mut n = Big::zero();
    for &d in significant {
        n.mul_add_small(10, u32::from(d));
    }
    let (mant, q) = if e10 >= 0 {
        round(&n.mul_pow10(usize::try_from(e10).ok()?), 0, false)?
    } else {
        let den = Big::from_u64(1).mul_pow10(usize::try_from(e10.saturating_neg()).ok()?);
        let s = den.bit_len().saturating_add(66).saturating_sub(n.bit_len());
        let (quot, rem) = n.shl(s).divmod(&den);
        round(&quot, i64::try_from(s).ok()?.saturating_neg(), !rem.is_zero())?
    };
    // strtold's ERANGE on a non-zero input that rounds to zero: Redis refuses it.
    (mant != 0).then_some((mant, q))
}

fn from_hex(digits: &[u8], after_point: i64, exp: i64) -> Option<(u64, i64)> {
    let mut n = Big::zero();
    for &d in digits {
        n.mul_add_small(16, u32::from(d));
    }
    if n.is_zero() {
        return Some((0, 0));
    }
    let e2 = exp.saturating_sub(after_point.saturating_mul(4));
    let top = i64::try_from(n.bit_len()).ok()?.saturating_add(e2);
    if top > MAX_BITS.saturating_add(1) || top < MIN_EXP.saturating_sub(2) {
        return None;
    }
    let (mant, q) = round(&n, e2, false)?;
    (mant != 0).then_some((mant, q))
}

/// `a + b` rounded once; None when the sum is infinite or NaN (Redis refuses both).
pub(crate) fn add(a: LongDouble, b: LongDouble) -> Option<LongDouble> {
    if a.inf || b.inf {
        return None;
    }
    if a.mant == 0 {
        return Some(b);
    }
    if b.mant == 0 {
        return Some(a);
    }
    let q = a.exp.min(b.exp);
    let big_a = Big::from_u64(a.mant).shl(usize::try_from(a.exp.saturating_sub(q)).ok()?);
    let big_b = Big::from_u64(b.mant).shl(usize::try_from(b.exp.saturating_sub(q)).ok()?);
    let (neg, sum) = if a.neg == b.neg {
        (a.neg, big_a.add(&big_b))
    } else if big_a >= big_b {
        (a.neg, big_a.sub(&big_b))
    } else {
        (b.neg, big_b.sub(&big_a))
    };
    if sum.is_zero() {
        return Some(LongDouble::ZERO);
    }
    let (mant, exp) = round(&sum, q, false)?;
    Some(LongDouble { neg, mant, exp, inf: false })
}

/// Redis' `ld2string(.., LD_STR_HUMAN)`: `%.17Lf`, trailing zeros and point removed,
/// `-0` printed as `0`.
pub(crate) fn format_human(x: LongDouble) -> Vec<u8> {
    const SCALE: u128 = 100_000_000_000_000_000; // 10^17
    let mut text = Vec::new();
    if x.inf {
        text.extend_from_slice(if x.neg { b"-inf" } else { b"inf" });
        return text;
    }
    let (int_digits, frac) = if x.exp >= 0 {
        let shift = usize::try_from(x.exp).unwrap_or(0);
        (Big::from_u64(x.mant).shl(shift).to_decimal(), 0u128)
    } else {
        let shift = u32::try_from(x.exp.saturating_neg()).unwrap_or(u32::MAX);
        let p = u128::from(x.mant).wrapping_mul(SCALE);
        let r = if shift >= 122 {
            0
        } else {
            let r = p >> shift;
            let rem = p & ((1u128 << shift).wrapping_sub(1));
            let half = 1u128 << shift.saturating_sub(1);
            if rem > half || rem == half && r & 1 == 1 {
                r.wrapping_add(1)
            } else {
                r
            }
        };
        (u128_decimal(r / SCALE), r % SCALE)
    };
    if x.neg && (int_digits != b"0" || frac != 0) {
        text.push(b'-');
    }
    text.extend_from_slice(&int_digits);
    if frac != 0 {
        text.push(b'.');
        let digits = u128_decimal(frac);
        text.extend(core::iter::repeat_n(b'0', 17usize.saturating_sub(digits.len())));
        text.extend_from_slice(&digits);
        while text.last() == Some(&b'0') {
            text.pop();
        }
    }
    text
}

fn u128_decimal(mut n: u128) -> Vec<u8> {
    let mut digits = Vec::new();
    loop {
        digits.push(b'0'.wrapping_add((n % 10) as u8));
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}

#[cfg(test)]
mod tests;
