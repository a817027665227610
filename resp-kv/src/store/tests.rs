//! Unit tests of the keyspace's bookkeeping: memory, expiry index, encodings.

use super::*;

#[test]
fn used_bytes_returns_to_zero_after_deleting_everything() {
    let mut store = Store::new(Limits::default());
    store.set(b"a", b"1".to_vec(), Some(10), false, 0).unwrap();
    store.set(b"b", b"22".to_vec(), None, false, 0).unwrap();
    store.set_expiry(b"b", Some(5), 0).unwrap();
    store.append(b"b", b"333", 0).unwrap();
    store.set_range(b"c", 3, b"x", 0).unwrap();
    store.copy(b"b", b"d", 0).unwrap();
    store.rename(b"d", b"e", 0);
    for key in [&b"a"[..], b"b", b"c", b"e"] {
        assert!(store.delete(key, 0));
    }
    assert_eq!(store.used_bytes(), 0);
    assert_eq!(store.expires_count(), 0);
    assert_eq!(store.len(), 0);
}

#[test]
fn expire_some_respects_budget_and_time() {
    let mut store = Store::new(Limits::default());
    for k in 0u8..5 {
        store.set(&[k], b"v".to_vec(), Some(u64::from(k)), false, 0).unwrap();
    }
    assert_eq!(store.expire_some(3, 2), 2);
    assert_eq!(store.expire_some(3, 10), 1);
    assert_eq!(store.len(), 2);
}

#[test]
fn keep_ttl_preserves_expiry_on_overwrite() {
    let mut store = Store::new(Limits::default());
    store.set(b"k", b"1".to_vec(), Some(100), false, 0).unwrap();
    store.set(b"k", b"2".to_vec(), None, true, 0).unwrap();
    assert_eq!(store.expiry(b"k", 0), Some(Some(100)));
    store.set(b"k", b"3".to_vec(), None, false, 0).unwrap();
    assert_eq!(store.expiry(b"k", 0), Some(None));
}

#[test]
fn encodings_follow_the_writing_command() {
    let mut store = Store::new(Limits::default());
    store.set(b"i", b"-12".to_vec(), None, false, 0).unwrap();
    store.set(b"e", [b'x'; 44].to_vec(), None, false, 0).unwrap();
    store.set(b"r", [b'x'; 45].to_vec(), None, false, 0).unwrap();
    store.set(b"a", b"1".to_vec(), None, false, 0).unwrap();
    store.append(b"a", b"", 0).unwrap();
    let enc = |s: &mut Store, k: &[u8]| s.entry(k, 0).unwrap().enc;
    assert_eq!(enc(&mut store, b"i"), Enc::Int);
    assert_eq!(enc(&mut store, b"e"), Enc::Embstr);
    assert_eq!(enc(&mut store, b"r"), Enc::Raw);
    assert_eq!(enc(&mut store, b"a"), Enc::Raw);
    assert_eq!(Enc::natural(b"01"), Enc::Embstr);
    assert_eq!(Enc::natural(b"9223372036854775808"), Enc::Embstr);
}

#[test]
fn set_range_pads_with_zeros_and_keeps_longer_values() {
    let mut store = Store::new(Limits::default());
    assert_eq!(store.set_range(b"k", 2, b"ab", 0), Ok(4));
    assert_eq!(store.get(b"k", 0), Some(&b"\0\0ab"[..]));
    assert_eq!(store.set_range(b"k", 0, b"x", 0), Ok(4));
    assert_eq!(store.get(b"k", 0), Some(&b"x\0ab"[..]));
    assert_eq!(store.set_range(b"k", 6, b"y", 0), Ok(7));
    assert_eq!(store.get(b"k", 0), Some(&b"x\0ab\0\0y"[..]));
}
