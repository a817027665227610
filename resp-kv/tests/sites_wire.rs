//! The site link: codec round trips and bounds, a decoder that never panics, and the
//! handshake / record checks that keep bad input away from the data.
mod sites;

use proptest::prelude::*;
use resp_kv::sites::hlc::Timestamp;
use resp_kv::sites::link::{Inbound, LinkError, Outbound};
use resp_kv::sites::wire::{decode, encode, Frame, WireError, MAX_FRAME};
use resp_kv::sites::{Dot, Op, Policy, Value, VersionVector, Write};
use resp_kv::{Limits, Store};
use sites::{config, Cluster};

fn write_strategy() -> impl Strategy<Value = Write> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..20);
    let op = prop_oneof![
        (
            prop_oneof![
                Just(Value::Absent),
                bytes().prop_map(Value::Str),
                prop::collection::btree_set(bytes(), 0..4).prop_map(Value::Set)
            ],
            prop::collection::vec((1u8..9, any::<u64>(), any::<i64>()), 0..4)
        )
            .prop_map(|(value, clear)| Op::Assign { value, clear }),
        (any::<i64>(), any::<bool>()).prop_map(|(total, reset)| Op::Counter { total, clear: vec![], reset }),
        prop::collection::vec(bytes(), 0..4).prop_map(Op::SetAdd),
        prop::collection::vec(bytes(), 0..4).prop_map(Op::SetRem),
    ];
    (1u8..9, 1u64.., any::<u64>(), any::<u32>(), prop::collection::vec((1u8..9, any::<u64>()), 0..8), bytes(), op)
        .prop_map(|(site, counter, wall_ms, logical, ctx, key, op)| Write {
            key,
            dot: Dot { site, counter },
            hlc: Timestamp { wall_ms, logical },
            ctx: ctx.into_iter().collect::<VersionVector>(),
            op,
        })
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), any::<u8>(), any::<u64>(), any::<u8>())
            .prop_map(|(version, site, sites_digest, policy)| Frame::Hello { version, site, sites_digest, policy }),
        (any::<u8>(), any::<u64>()).prop_map(|(site, resume_after)| Frame::Welcome { site, resume_after }),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|reason| Frame::Refuse { reason }),
        (any::<u64>(), write_strategy()).prop_map(|(seq, write)| Frame::Write { seq, write }),
        any::<u64>().prop_map(|seq| Frame::Ack { seq }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_and_every_prefix_asks_for_more(frame in frame_strategy()) {
        let mut buf = Vec::new();
        encode(&frame, &mut buf);
        prop_assert_eq!(decode(&buf), Ok(Some((frame, buf.len()))));
        for cut in 0..buf.len() {
            prop_assert_eq!(decode(&buf[..cut]), Ok(None));
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_never_a_panic(frame in frame_strategy(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut buf = Vec::new();
        encode(&frame, &mut buf);
        let i = at.index(buf.len());
        buf[i] ^= 1 << bit;
        match decode(&buf) {
            // A flip in the length field can make the frame look longer: then it waits.
            Ok(None) => prop_assert!(i < 4),
            Ok(Some((f, _))) => prop_assert!(false, "corrupted frame accepted: {:?}", f),
            Err(_) => {}
        }
    }

    #[test]
    fn garbage_never_panics_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn garbage_with_a_valid_checksum_never_panics(body in prop::collection::vec(any::<u8>(), 1..200)) {
        let mut buf = (body.len() as u32).to_le_bytes().to_vec();
        buf.extend_from_slice(&resp_kv::sites::wire::crc32(&body).to_le_bytes());
        buf.extend_from_slice(&body);
        let _ = decode(&buf);
    }
}

#[test]
fn frame_lengths_past_the_bound_are_refused_before_buffering() {
    let mut buf = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
    buf.extend_from_slice(&[0; 4]);
    assert_eq!(decode(&buf), Err(WireError::BadLength(MAX_FRAME as u32 + 1)));
    let mut ok = (MAX_FRAME as u32).to_le_bytes().to_vec();
    ok.extend_from_slice(&[0; 4]);
    assert_eq!(decode(&ok), Ok(None), "a frame of exactly MAX_FRAME is legal, just incomplete");
    assert_eq!(decode(&[0; 8]), Err(WireError::BadLength(0)));
}

#[test]
fn a_crc32_matches_zlib() {
    assert_eq!(resp_kv::sites::wire::crc32(b"123456789"), 0xcbf4_3926);
}

/// Connect site `from`'s outbound to site `to`'s inbound and pump until quiet.
fn pump(c: &mut Cluster, from: u8, to: u8, out: &mut Outbound, inb: &mut Inbound) -> Result<(), LinkError> {
    let (fi, ti) = (usize::from(from - 1), usize::from(to - 1));
    for _ in 0..100 {
        let mut forward = Vec::new();
        out.transmit(c.sites[fi].store.sites().unwrap(), &mut forward, 64 * 1024);
        let mut back = Vec::new();
        let now = c.sites[ti].now_ms;
        let r = inb.receive(&forward, c.sites[ti].store.sites_mut().unwrap(), now, &mut back);
        let r2 = out.receive(&back, c.sites[fi].store.sites_mut().unwrap());
        r?;
        r2?;
        if forward.is_empty() && back.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

#[test]
fn the_link_streams_writes_and_a_reconnect_resumes_from_the_cursor() {
    let mut c = Cluster::new(2, Policy::Merge);
    for _ in 0..5 {
        c.cmd(1, "INCR n");
    }
    let (mut out, mut inb) = (Outbound::new(2), Inbound::new());
    pump(&mut c, 1, 2, &mut out, &mut inb).unwrap();
    assert_eq!(c.cmd(2, "GET n"), "$1\r\n5\r\n");
    assert_eq!(c.sites[0].store.sites().unwrap().log_bytes(), 0, "acked records leave the log");
    // The connection drops; three more writes; a new connection resumes at record 6.
    for _ in 0..3 {
        c.cmd(1, "INCR n");
    }
    let (mut out, mut inb) = (Outbound::new(2), Inbound::new());
    pump(&mut c, 1, 2, &mut out, &mut inb).unwrap();
    assert_eq!(c.cmd(2, "GET n"), "$1\r\n8\r\n");
    assert_eq!(c.sites[1].store.sites().unwrap().stats().duplicates, 0);
}

fn refused_handshake(receiver_policy: Policy, hello: Frame) -> (LinkError, Vec<u8>, u64) {
    let mut store = Store::with_sites(Limits::default(), config(2, 3, receiver_policy, 1_700_000_000_000));
    let before = store.sites().unwrap().digest();
    let mut inb = Inbound::new();
    let mut bytes = Vec::new();
    encode(&hello, &mut bytes);
    let mut out = Vec::new();
    let err = inb.receive(&bytes, store.sites_mut().unwrap(), 0, &mut out).unwrap_err();
    assert_eq!(store.sites().unwrap().digest(), before);
    (err, out, before)
}

fn hello(site: u8, policy: Policy) -> Frame {
    hello_of(site, policy, 3)
}

fn hello_of(site: u8, policy: Policy, sites: u8) -> Frame {
    let c = config(1, sites, policy, 0);
    Frame::Hello { version: 1, site, sites_digest: c.sites_digest(), policy: policy as u8 }
}

#[test]
fn a_mismatched_conflict_policy_unknown_site_or_site_list_is_refused_with_a_reason() {
    let (e, out, _) = refused_handshake(Policy::Lww, hello(1, Policy::Merge));
    assert!(e.to_string().contains("--conflict differs"), "{e}");
    assert!(matches!(decode(&out), Ok(Some((Frame::Refuse { .. }, _)))), "the peer is told why");
    let (e, _, _) = refused_handshake(Policy::Lww, hello(9, Policy::Lww));
    assert!(e.to_string().contains("unknown site id"), "{e}");
    let (e, _, _) = refused_handshake(Policy::Lww, hello(2, Policy::Lww));
    assert!(e.to_string().contains("--site-id"), "{e}");
    let other = Frame::Hello { version: 1, site: 1, sites_digest: 42, policy: 1 };
    let (e, _, _) = refused_handshake(Policy::Lww, other);
    assert!(e.to_string().contains("--sites differs"), "{e}");
}

#[test]
fn garbage_a_gap_and_a_write_from_the_future_are_refused_and_change_nothing() {
    let mut c = Cluster::new(2, Policy::Lww);
    c.cmd(2, "SET k kept");
    let digest = c.sites[1].store.sites().unwrap().digest();
    let receive = |c: &mut Cluster, frames: &[Frame], raw: &[u8]| {
        let mut bytes = Vec::new();
        frames.iter().for_each(|f| encode(f, &mut bytes));
        bytes.extend_from_slice(raw);
        let mut out = Vec::new();
        Inbound::new().receive(&bytes, c.sites[1].store.sites_mut().unwrap(), 5_000, &mut out).unwrap_err()
    };
    let good = |seq: u64, wall_ms: u64| Frame::Write {
        seq,
        write: Write {
            key: b"k".to_vec(),
            dot: Dot { site: 1, counter: seq },
            hlc: Timestamp { wall_ms, logical: 0 },
            ctx: VersionVector::new(),
            op: Op::Assign { value: Value::Str(b"evil".to_vec()), clear: vec![] },
        },
    };
    let e = receive(&mut c, &[hello_of(1, Policy::Lww, 2)], b"\x05\x00\x00\x00garbage!!");
    assert!(matches!(e, LinkError::Wire(_)), "{e}");
    let e = receive(&mut c, &[hello_of(1, Policy::Lww, 2), good(2, 1_700_000_000_000)], b"");
    assert!(e.to_string().contains("records lost"), "{e}");
    let e = receive(&mut c, &[hello_of(1, Policy::Lww, 2), good(1, 1_700_000_000_000 + 3_600_000)], b"");
    assert!(e.to_string().contains("ahead of this site's clock"), "{e}");
    let e = receive(&mut c, &[good(1, 1_700_000_000_000)], b"");
    assert!(e.to_string().contains("before HELLO"), "{e}");
    assert_eq!(c.sites[1].store.sites().unwrap().digest(), digest);
    assert_eq!(c.cmd(2, "GET k"), "$4\r\nkept\r\n");
    assert!(c.cmd(2, "INFO sites").contains("sites_refused_records:2\r\n"));
}
