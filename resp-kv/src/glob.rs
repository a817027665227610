//! Redis' glob (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`, `\x` escapes, with all
//! of Redis' edge cases (an unclosed `[` runs to the end of the pattern, `[z-a]` is
//! `[a-z]`, ranges compare bytes as signed `char`, the empty key matches only the empty
//! pattern).
//!
//! Redis recurses once per `*`, which on a guest with a 256 KiB stack a pattern of a few
//! thousand stars would overflow. This is the same matcher without recursion: it keeps
//! only the last `*` as a backtrack point, which is exactly what Redis' recursion does
//! once its `skipLongerMatches` cut-off applies (a unit test compares the two on random
//! patterns). Time is O(pattern × key) at worst.

/// Match one non-`*` pattern element starting at `p` against byte `c`; returns whether
/// it matched and how many pattern bytes it spans.
fn element(pattern: &[u8], p: usize, c: u8, nocase: bool) -> (bool, usize) {
    let at = |i: usize| pattern.get(i).copied();
    let eq = |a: u8, b: u8| if nocase { a.eq_ignore_ascii_case(&b) } else { a == b };
    match at(p) {
        Some(b'?') => (true, 1),
        Some(b'[') => class(pattern, p, c, nocase),
        Some(b'\\') if p.saturating_add(1) < pattern.len() => (at(p.saturating_add(1)).is_some_and(|x| eq(x, c)), 2),
        Some(x) => (eq(x, c), 1),
        None => (false, 0),
    }
}

/// `[...]` at `p`: returns (matched, bytes spanned including the closing `]`).
fn class(pattern: &[u8], start: usize, c: u8, nocase: bool) -> (bool, usize) {
    let lower = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let mut p = start.saturating_add(1);
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p = p.saturating_add(1);
    }
    let mut matched = false;
    loop {
        let left = pattern.len().saturating_sub(p);
        match pattern.get(p).copied() {
            Some(b'\\') if left >= 2 => {
                p = p.saturating_add(1);
                if pattern.get(p) == Some(&c) {
                    matched = true;
                }
            }
            Some(b']') => break,
            None => {
                // Unclosed class: Redis steps back so the final increment lands on the end.
                p = p.saturating_sub(1);
                break;
            }
            Some(first) if left >= 3 && pattern.get(p.saturating_add(1)) == Some(&b'-') => {
                let last = pattern.get(p.saturating_add(2)).copied().unwrap_or(first);
                // C compares these as (signed) char on x86-64.
                let (mut lo, mut hi) = (lower(first) as i8, lower(last) as i8);
                if lo > hi {
                    core::mem::swap(&mut lo, &mut hi);
                }
                let ch = lower(c) as i8;
                if ch >= lo && ch <= hi {
                    matched = true;
                }
                p = p.saturating_add(2);
            }
            Some(x) => {
                if lower(x) == lower(c) {
                    matched = true;
                }
            }
        }
        p = p.saturating_add(1);
    }
    (matched != negate, p.saturating_add(1).saturating_sub(start))
}

/// Whether `text` matches the Redis glob `pattern` (case-insensitively with `nocase`).
pub(crate) fn glob_match(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    if text.is_empty() {
        return pattern.is_empty();
    }
    let (mut p, mut t) = (0usize, 0usize);
    // After the last `*`: the pattern offset just past it and the text offset it was
    // last tried at.
    let mut star: Option<(usize, usize)> = None;
    loop {
        // Each branch either moves on (`continue`), decides, or falls through to the
        // backtracking below as a mismatch.
        if t >= text.len() {
            while pattern.get(p) == Some(&b'*') {
                p = p.saturating_add(1);
            }
            if p >= pattern.len() {
                return true;
            }
        } else if pattern.get(p) == Some(&b'*') {
            while pattern.get(p.saturating_add(1)) == Some(&b'*') {
                p = p.saturating_add(1);
            }
            if p.saturating_add(1) >= pattern.len() {
                return true;
            }
            p = p.saturating_add(1);
            star = Some((p, t));
            continue;
        } else if p < pattern.len() {
            let c = text.get(t).copied().unwrap_or(0);
            let (ok, span) = element(pattern, p, c, nocase);
            if ok {
                p = p.saturating_add(span);
                t = t.saturating_add(1);
                continue;
            }
        }
        // Mismatch: the last star tries every start that leaves at least one byte.
        match star {
            Some((sp, st)) if st.saturating_add(1) < text.len() => {
                star = Some((sp, st.saturating_add(1)));
                p = sp;
                t = st.saturating_add(1);
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;
    use alloc::vec;
    use proptest::prelude::*;

    /// A literal port of Redis 7.0's recursive `stringmatchlen_impl`, as the reference.
    fn redis(pattern: &[u8], string: &[u8], nocase: bool, skip: &mut bool) -> bool {
        // Redis reads one byte past the end (the NUL terminator); model it.
        let pat = |i: usize| pattern.get(i).copied().unwrap_or(0);
        let lower = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
        let (mut p, mut plen) = (0usize, pattern.len());
        let (mut s, mut slen) = (0usize, string.len());
        while plen > 0 && slen > 0 {
            match pat(p) {
                b'*' => {
                    while plen > 0 && pat(p + 1) == b'*' {
                        p += 1;
                        plen -= 1;
                    }
                    if plen == 1 {
                        return true;
                    }
                    while slen > 0 {
                        if redis(&pattern[p + 1..p + plen], &string[s..s + slen], nocase, skip) {
                            return true;
                        }
                        if *skip {
                            return false;
                        }
                        s += 1;
                        slen -= 1;
                    }
                    *skip = true;
                    return false;
                }
                b'?' => {
                    s += 1;
                    slen -= 1;
                }
                b'[' => {
                    p += 1;
                    plen -= 1;
                    let not = pat(p) == b'^';
                    if not {
                        p += 1;
                        plen -= 1;
                    }
                    let mut matched = false;
                    loop {
                        if pat(p) == b'\\' && plen >= 2 {
                            p += 1;
                            plen -= 1;
                            if pat(p) == string[s] {
                                matched = true;
                            }
                        } else if pat(p) == b']' {
                            break;
                        } else if plen == 0 {
                            p -= 1;
                            plen += 1;
                            break;
                        } else if plen >= 3 && pat(p + 1) == b'-' {
                            let (mut a, mut b) = (lower(pat(p)) as i8, lower(pat(p + 2)) as i8);
                            if a > b {
                                core::mem::swap(&mut a, &mut b);
                            }
                            let c = lower(string[s]) as i8;
                            p += 2;
                            plen -= 2;
                            if c >= a && c <= b {
                                matched = true;
                            }
                        } else if lower(pat(p)) == lower(string[s]) {
                            matched = true;
                        }
                        p += 1;
                        plen -= 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    s += 1;
                    slen -= 1;
                }
                other => {
                    let mut x = other;
                    if other == b'\\' && plen >= 2 {
                        p += 1;
                        plen -= 1;
                        x = pat(p);
                    }
                    if lower(x) != lower(string[s]) {
                        return false;
                    }
                    s += 1;
                    slen -= 1;
                }
            }
            p += 1;
            plen -= 1;
            if slen == 0 {
                while pat(p) == b'*' && plen > 0 {
                    p += 1;
                    plen -= 1;
                }
                break;
            }
        }
        plen == 0 && slen == 0
    }

    fn reference(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
        redis(pattern, string, nocase, &mut false)
    }

    #[test]
    fn redis_examples() {
        for (pat, text, want) in [
            ("h?llo", "hello", true),
            ("h*llo", "heeeello", true),
            ("h[ae]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h\\*llo", "h*llo", true),
            ("*", "", false),
            ("", "", true),
            ("a*", "a", true),
            ("[abc", "b", true),
            ("*[", "a[", false),
            ("a[", "a[", false),
            ("*[[]", "a[", true),
            ("user:*:name", "user:42:name", true),
            ("user:*:name", "user:42:age", false),
        ] {
            assert_eq!(glob_match(pat.as_bytes(), text.as_bytes(), false), want, "{pat} vs {text}");
            assert_eq!(reference(pat.as_bytes(), text.as_bytes(), false), want, "reference {pat} vs {text}");
        }
    }

    #[test]
    fn many_stars_do_not_recurse_or_take_exponential_time() {
        let pattern: alloc::vec::Vec<u8> = b"a*".repeat(100_000).into_iter().chain(*b"b").collect();
        let text = [b'a'; 200_000];
        assert!(!glob_match(&pattern, &text, false));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn agrees_with_redis_recursive_matcher(
            pattern in proptest::collection::vec(prop_oneof![
                Just(b'*'), Just(b'?'), Just(b'['), Just(b']'), Just(b'^'), Just(b'-'), Just(b'\\'),
                Just(b'a'), Just(b'b'), Just(b'A'), Just(0xe9u8)
            ], 0..10),
            text in proptest::collection::vec(prop_oneof![
                Just(b'a'), Just(b'b'), Just(b'A'), Just(b'*'), Just(b']'), Just(b'-'), Just(0xe9u8)
            ], 0..8),
            nocase in any::<bool>(),
        ) {
            prop_assert_eq!(glob_match(&pattern, &text, nocase), reference(&pattern, &text, nocase));
        }
    }
}
