//! Unsigned big integers, just what `longdouble` needs: little-endian 32-bit limbs,
//! no leading zero limbs (so equal values have equal representations).

use alloc::vec::Vec;
use core::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Big(Vec<u32>);

impl Big {
    pub(super) fn zero() -> Big {
        Big(Vec::new())
    }

    pub(super) fn from_u64(v: u64) -> Big {
        let mut b = Big(alloc::vec![v as u32, (v >> 32) as u32]);
        b.trim();
        b
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    pub(super) fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn bit_len(&self) -> usize {
        match self.0.last() {
            None => 0,
            Some(top) => self
                .0
                .len()
                .saturating_sub(1)
                .saturating_mul(32)
                .saturating_add(32usize.saturating_sub(top.leading_zeros() as usize)),
        }
    }

    /// `self = self · m + a`.
    pub(super) fn mul_add_small(&mut self, m: u32, a: u32) {
        let mut carry = u64::from(a);
        for limb in self.0.iter_mut() {
            let v = u64::from(*limb).wrapping_mul(u64::from(m)).wrapping_add(carry);
            *limb = v as u32;
            carry = v >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    /// `self · 10^k`.
    pub(super) fn mul_pow10(mut self, mut k: usize) -> Big {
        while k >= 9 {
            self.mul_add_small(1_000_000_000, 0);
            k = k.saturating_sub(9);
        }
        let rest = (0..k).fold(1u32, |p, _| p.wrapping_mul(10));
        self.mul_add_small(rest, 0);
        self
    }

    pub(super) fn shl(&self, bits: usize) -> Big {
        if self.is_zero() {
            return Big::zero();
        }
        let (limbs, bits) = (bits / 32, (bits % 32) as u32);
        let mut out = alloc::vec![0u32; limbs];
        let mut carry = 0u32;
        for &limb in &self.0 {
            out.push(if bits == 0 { limb } else { (limb << bits) | carry });
            carry = if bits == 0 { 0 } else { limb >> 32u32.saturating_sub(bits) };
        }
        out.push(carry);
        let mut b = Big(out);
        b.trim();
        b
    }

    pub(super) fn bit(&self, i: usize) -> bool {
        self.0.get(i / 32).is_some_and(|limb| (limb >> (i % 32)) & 1 == 1)
    }

    /// Any bit set below position `i`?
    pub(super) fn any_below(&self, i: usize) -> bool {
        let (whole, part) = (i / 32, i % 32);
        self.0.iter().take(whole).any(|&l| l != 0)
            || (part != 0 && self.0.get(whole).is_some_and(|&l| l & ((1u32 << part).wrapping_sub(1)) != 0))
    }

    /// The low 64 bits of `self >> shift`.
    pub(super) fn shr_low_u64(&self, shift: usize) -> u64 {
        (0..64).filter(|&k| self.bit(shift.saturating_add(k))).fold(0u64, |v, k| v | (1u64 << k))
    }

    pub(super) fn low_u64(&self) -> u64 {
        self.shr_low_u64(0)
    }

    pub(super) fn add(&self, other: &Big) -> Big {
        let n = self.0.len().max(other.0.len());
        let mut out = Vec::with_capacity(n.saturating_add(1));
        let mut carry = 0u64;
        for i in 0..n {
            let a = u64::from(self.0.get(i).copied().unwrap_or(0));
            let b = u64::from(other.0.get(i).copied().unwrap_or(0));
            let v = a.wrapping_add(b).wrapping_add(carry);
            out.push(v as u32);
            carry = v >> 32;
        }
        out.push(carry as u32);
        let mut b = Big(out);
        b.trim();
        b
    }

    /// `self - other`; `self >= other` is the caller's promise.
    pub(super) fn sub(&self, other: &Big) -> Big {
        let mut out = Vec::with_capacity(self.0.len());
        let mut borrow = 0i64;
        for (i, &a) in self.0.iter().enumerate() {
            let b = i64::from(other.0.get(i).copied().unwrap_or(0));
            let mut v = i64::from(a).wrapping_sub(b).wrapping_sub(borrow);
            borrow = 0;
            if v < 0 {
                v = v.wrapping_add(1 << 32);
                borrow = 1;
            }
            out.push(v as u32);
        }
        let mut b = Big(out);
        b.trim();
        b
    }

    /// Quotient and remainder, bit by bit (inputs here are at most ~35,000 bits).
    pub(super) fn divmod(&self, den: &Big) -> (Big, Big) {
        let mut quot = alloc::vec![0u32; self.0.len()];
        let mut rem = Big::zero();
        for i in (0..self.bit_len()).rev() {
            rem = rem.shl(1);
            if self.bit(i) {
                match rem.0.first_mut() {
                    Some(low) => *low |= 1,
                    None => rem.0.push(1),
                }
            }
            if rem >= *den {
                rem = rem.sub(den);
                if let Some(q) = quot.get_mut(i / 32) {
                    *q |= 1 << (i % 32);
                }
            }
        }
        let mut q = Big(quot);
        q.trim();
        (q, rem)
    }

    /// Decimal digits (ASCII), "0" for zero.
    pub(super) fn to_decimal(&self) -> Vec<u8> {
        let mut limbs = self.0.clone();
        let mut chunks: Vec<u32> = Vec::new();
        while !limbs.is_empty() {
            let mut rem = 0u64;
            for limb in limbs.iter_mut().rev() {
                let v = (rem << 32) | u64::from(*limb);
                *limb = (v / 1_000_000_000) as u32;
                rem = v % 1_000_000_000;
            }
            chunks.push(rem as u32);
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
        }
        let mut text = Vec::new();
        for (i, chunk) in chunks.iter().rev().enumerate() {
            let mut digits = [b'0'; 9];
            let mut c = *chunk;
            for d in digits.iter_mut().rev() {
                *d = b'0'.wrapping_add((c % 10) as u8);
                c /= 10;
            }
            let skip = if i == 0 { digits.iter().position(|&d| d != b'0').unwrap_or(8) } else { 0 };
            text.extend_from_slice(digits.get(skip..).unwrap_or(&[]));
        }
        if text.is_empty() {
            text.push(b'0');
        }
        text
    }
}

impl PartialOrd for Big {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Big {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}
