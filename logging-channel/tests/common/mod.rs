//! Shared generators and helpers for the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use logging_channel::codec::encode;
use logging_channel::{DigestScope, EndReason, Event, ExitKind, ExitSig, Hash, LogHeader, Record};
use proptest::prelude::*;

pub fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>()
}

pub fn arb_exit_kind() -> impl Strategy<Value = ExitKind> {
    prop::sample::select(ExitKind::VALID.to_vec())
}

pub fn arb_sig() -> impl Strategy<Value = ExitSig> {
    (arb_exit_kind(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(kind, addr, data, regs_hash)| ExitSig {
        kind,
        addr,
        data,
        regs_hash,
    })
}

pub fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        any::<u8>().prop_map(|vector| Event::Interrupt { vector }),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(device, bytes)| Event::DeviceInput { device, bytes }),
    ]
}

pub fn arb_entry() -> impl Strategy<Value = Record> {
    (any::<u64>(), arb_sig(), prop::collection::vec(arb_event(), 1..5))
        .prop_map(|(exit_index, sig, events)| Record::Entry { exit_index, sig, events })
}

pub fn arb_record() -> impl Strategy<Value = Record> {
    prop_oneof![
        arb_entry(),
        any::<u64>().prop_map(|exit_index| Record::Progress { exit_index }),
        (any::<u64>(), prop::sample::select(DigestScope::VALID.to_vec()), arb_hash())
            .prop_map(|(exit_index, scope, hash)| Record::Digest { exit_index, scope, hash }),
        any::<u64>().prop_map(|exit_index| Record::Released { exit_index }),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(exit_index, epoch, eligible)| Record::Standing {
            exit_index,
            epoch,
            eligible
        }),
        (any::<u64>(), prop::sample::select(EndReason::VALID.to_vec()), prop::option::of(arb_hash()))
            .prop_map(|(exit_index, reason, state_digest)| Record::End { exit_index, reason, state_digest }),
    ]
}

/// Rewrites exit indices to strictly increase (released marks to trail them) and keeps `End` only last, so
/// the list obeys every ordering rule.
pub fn in_log_order(records: Vec<Record>, first_index: u64) -> Vec<Record> {
    let mut out: Vec<Record> = records.into_iter().filter(|r| !matches!(r, Record::End { .. })).collect();
    let mut covered = None;
    for (i, record) in out.iter_mut().enumerate() {
        let index = first_index + 3 * i as u64;
        match record {
            // Released marks trail the log: they release what entries or progress covered.
            Record::Released { exit_index } | Record::Standing { exit_index, .. } => match covered {
                Some(c) => *exit_index = c,
                None => *record = Record::Progress { exit_index: index },
            },
            _ => set_exit_index(record, index),
        }
        if let Record::Entry { exit_index, .. } | Record::Progress { exit_index } = record {
            covered = Some(*exit_index);
        }
    }
    out
}

pub fn set_exit_index(record: &mut Record, index: u64) {
    match record {
        Record::Entry { exit_index, .. }
        | Record::Progress { exit_index }
        | Record::Digest { exit_index, .. }
        | Record::Released { exit_index }
        | Record::End { exit_index, .. }
        | Record::Standing { exit_index, .. } => *exit_index = index,
    }
}

/// A valid, ordered log body with an `End`.
pub fn arb_log() -> impl Strategy<Value = Vec<Record>> {
    (
        prop::collection::vec(arb_record(), 0..12),
        0u64..1_000_000,
        prop::option::of(prop::sample::select(EndReason::VALID.to_vec())),
    )
        .prop_map(|(records, first, end)| {
            let mut log = in_log_order(records, first);
            if let Some(reason) = end {
                let exit_index = log.iter().map(|r| r.exit_index() + 1).max().unwrap_or(first);
                log.push(Record::End { exit_index, reason, state_digest: None });
            }
            log
        })
}

pub fn arb_header() -> impl Strategy<Value = LogHeader> {
    (arb_hash(), any::<u64>(), arb_hash(), any::<u32>()).prop_map(
        |(guest_image_digest, mem_size, cpuid_digest, tick_hz)| LogHeader {
            guest_image_digest,
            mem_size,
            cpuid_digest,
            tick_hz,
        },
    )
}

pub fn encode_all(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        encode(r, &mut out);
    }
    out
}

/// Frames an arbitrary tag+payload with a correct length and checksum, to
/// reach the payload parser past the CRC.
pub fn frame_with_body(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out
}

pub fn sample_sig() -> ExitSig {
    ExitSig { kind: ExitKind::IoIn, addr: 0x3f8, data: 0x41, regs_hash: 0xdead_beef }
}

pub fn entry(exit_index: u64) -> Record {
    Record::Entry { exit_index, sig: sample_sig(), events: vec![Event::Interrupt { vector: 32 }] }
}

pub fn sample_header() -> LogHeader {
    LogHeader { guest_image_digest: [0xab; 32], mem_size: 256 << 20, cpuid_digest: [0xcd; 32], tick_hz: 100 }
}
