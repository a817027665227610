//! Byte-level mutations of a valid input, biased to what breaks decoders: lengths and
//! counts set to boundary values, truncation, and parts of other valid inputs spliced in.
use crate::rng::Rng;

/// Applies 1..=4 random mutations to `data`; `other` is another valid input to splice from.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..=rng.below(4) {
        mutate_once(rng, data, other);
    }
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = *rng.pick(&[0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b'*', b'$', b'-']);
        }
        2 if len >= 4 => {
            // A 1/2/4/8-byte little-endian field (a length, count or index) set to a
            // boundary value.
            let width = *rng.pick(&[1usize, 2, 4, 8]);
            let at = rng.below(len);
            let value = rng.interesting_u64().to_le_bytes();
            for (i, b) in value.iter().take(width).enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 if len > 0 => data.truncate(rng.below(len)),
        4 if !other.is_empty() => {
            let from = rng.below(other.len());
            let to = from + rng.below(other.len() - from + 1);
            let at = rng.below(len + 1);
            data.splice(at..at, other[from..to].iter().copied());
        }
        5 if len > 0 => {
            let from = rng.below(len);
            let to = (from + 1 + rng.below(64)).min(len);
            let copy = data[from..to].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, copy);
        }
        6 if len > 0 => {
            let from = rng.below(len);
            let to = (from + 1 + rng.below(32)).min(len);
            data.drain(from..to);
        }
        7 => {
            // ASCII digits in text protocols: a RESP length made huge or negative.
            let at = rng.below(len + 1);
            let digits = *rng.pick(&[&b"-1"[..], b"0", b"4194305", b"99999999999999999999", b"-9223372036854775808"]);
            data.splice(at..at, digits.iter().copied());
        }
        _ => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let junk = rng.bytes(n);
            data.splice(at..at, junk);
        }
    }
}
