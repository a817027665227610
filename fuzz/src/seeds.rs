//! Valid inputs for every target, built with the real encoders from random values.
use logging_channel::channel::{self, AttachReply, AttachRequest, Hello, HelloReply, Message, RefuseCode, Role};
use logging_channel::state::{self, BlobKind, StateMessage};
use logging_channel::{codec, DigestScope, EndReason, Event, ExitKind, ExitSig, LogHeader, LogWriter, Record};
use resp_kv::sites::{wire, Policy, SiteAddr, SiteConfig};
use resp_kv::{Conn, Limits, ServerInfo, Store};

use crate::rng::Rng;

fn hash(rng: &mut Rng) -> [u8; 32] {
    let mut h = [0u8; 32];
    h.iter_mut().for_each(|b| *b = rng.byte());
    h
}

/// A random valid record at or after `index`.
pub fn record(rng: &mut Rng, index: u64) -> Record {
    match rng.below(6) {
        0 => Record::Entry {
            exit_index: index,
            sig: ExitSig {
                kind: *rng.pick(&ExitKind::VALID),
                addr: rng.interesting_u64(),
                data: rng.interesting_u64(),
                regs_hash: rng.next_u64(),
            },
            events: (0..1 + rng.below(3))
                .map(|_| match rng.below(2) {
                    0 => Event::Interrupt { vector: rng.byte() },
                    _ => Event::DeviceInput { device: rng.next_u64() as u16, bytes: rng.bytes_upto(200) },
                })
                .collect(),
        },
        1 => Record::Progress { exit_index: index },
        2 => Record::Digest { exit_index: index, scope: *rng.pick(&DigestScope::VALID), hash: hash(rng) },
        3 => Record::Released { exit_index: index },
        4 => Record::Standing { exit_index: index, epoch: rng.interesting_u64(), eligible: rng.one_in(2) },
        _ => Record::End {
            exit_index: index,
            reason: *rng.pick(&EndReason::VALID),
            state_digest: rng.one_in(2).then(|| hash(rng)),
        },
    }
}

/// Frames of 1..8 records with rising exit indices (a log stream).
pub fn log_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let mut index = rng.below(1000) as u64;
    for _ in 0..1 + rng.below(8) {
        index += rng.below(5) as u64;
        codec::encode(&record(rng, index), &mut out);
    }
    // Half of them as a resume sends them: packed.
    packed_or_not(rng, out)
}

/// `frames` packed (`pack::pack`), or as they are, at random.
fn packed_or_not(rng: &mut Rng, frames: Vec<u8>) -> Vec<u8> {
    if !rng.one_in(2) {
        return frames;
    }
    let mut out = Vec::new();
    logging_channel::pack::pack(&frames, &mut out);
    out
}

/// A whole record file: header and a log stream.
pub fn log_file(rng: &mut Rng) -> Vec<u8> {
    let header = LogHeader { guest_image_digest: hash(rng), mem_size: 64 << 20, cpuid_digest: hash(rng), tick_hz: 250 };
    let mut w = LogWriter::new(Vec::new(), &header).expect("writing to a Vec");
    let mut index = 0;
    for _ in 0..1 + rng.below(8) {
        index += rng.below(5) as u64;
        if w.write(&record(rng, index)).is_err() {
            break; // out of order (a released mark past the entries): end the file here
        }
    }
    w.into_inner()
}

fn text(rng: &mut Rng) -> String {
    (0..rng.below(80)).map(|_| char::from(b'a' + (rng.byte() % 26))).collect()
}

/// Handshake and attach messages, as on the replication port.
pub fn channel_messages(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let m = match rng.below(7) {
            0 => Message::Hello(Hello {
                protocol_version: logging_channel::PROTOCOL_VERSION,
                role: *rng.pick(&Role::VALID),
                guest_image_digest: hash(rng),
                mem_size: rng.interesting_u64(),
                cpuid_digest: hash(rng),
                tick_hz: rng.next_u64() as u32,
                epoch: rng.interesting_u64(),
                group: match rng.below(3) {
                    0 => logging_channel::GroupName::NONE,
                    1 => logging_channel::GroupName::new("10.77.0.10-0badc0de").unwrap_or_default(),
                    _ => logging_channel::GroupName::new(&"g".repeat(logging_channel::MAX_GROUP_NAME))
                        .unwrap_or_default(),
                },
            }),
            1 => Message::HelloReply(HelloReply::Accept),
            2 => Message::HelloReply(HelloReply::Refuse { code: *rng.pick(&RefuseCode::VALID), reason: text(rng) }),
            3 => Message::Ack(channel::Ack {
                received_through: rng.interesting_u64(),
                replayed_through: rng.interesting_u64(),
            }),
            4 => Message::Attach(match rng.below(2) {
                0 => AttachRequest::Fresh,
                _ => AttachRequest::Resume { epoch: rng.interesting_u64(), exit_index: rng.interesting_u64() },
            }),
            5 => Message::AttachReply(AttachReply::Resume { from: rng.interesting_u64(), through: rng.next_u64() }),
            _ => Message::AttachReply(match rng.below(2) {
                0 => AttachReply::State { why: text(rng) },
                _ => AttachReply::Refuse { why: text(rng) },
            }),
        };
        channel::encode(&m, &mut out);
    }
    out
}

/// A state transfer: Begin, pages, blobs, End.
pub fn state_transfer(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let exit_index = rng.interesting_u64();
    state::encode(&StateMessage::Begin { exit_index, epoch: rng.next_u64(), mem_size: 64 << 20 }, &mut out);
    for _ in 0..rng.below(3) {
        let pages = 1 + rng.below(2);
        let mut data = vec![0u8; pages * 4096];
        data.iter_mut().step_by(61).for_each(|b| *b = rng.byte());
        state::encode(&StateMessage::Pages { first_page: rng.interesting_u64(), data }, &mut out);
    }
    for _ in 0..rng.below(3) {
        let kind = *rng.pick(&BlobKind::VALID);
        state::encode(&StateMessage::Blob { kind, bytes: rng.bytes_upto(600) }, &mut out);
    }
    state::encode(&StateMessage::End { exit_index, state_digest: hash(rng) }, &mut out);
    packed_or_not(rng, out)
}

const COMMANDS: [&str; 62] = [
    "PING",
    "ECHO",
    "GET",
    "SET",
    "SETNX",
    "GETDEL",
    "MGET",
    "MSET",
    "APPEND",
    "STRLEN",
    "INCR",
    "DECR",
    "INCRBY",
    "DECRBY",
    "DEL",
    "EXISTS",
    "TTL",
    "PTTL",
    "EXPIRE",
    "PEXPIRE",
    "PERSIST",
    "DBSIZE",
    "FLUSHALL",
    "FLUSHDB",
    "SELECT",
    "QUIT",
    "AUTH",
    "HELLO",
    "INFO",
    "COMMAND",
    "CONFIG",
    "CLIENT",
    "SADD",
    "CONFLICTS",
    "RESOLVE",
    "SETEX",
    "PSETEX",
    "GETSET",
    "GETEX",
    "GETRANGE",
    "SETRANGE",
    "INCRBYFLOAT",
    "MSETNX",
    "EXPIREAT",
    "PEXPIREAT",
    "EXPIRETIME",
    "PEXPIRETIME",
    "RENAME",
    "RENAMENX",
    "COPY",
    "KEYS",
    "SCAN",
    "TYPE",
    "RANDOMKEY",
    "UNLINK",
    "TOUCH",
    "OBJECT",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "UNWATCH",
];
const WORDS: [&str; 24] = [
    "k",
    "x",
    "NX",
    "XX",
    "GET",
    "EX",
    "PX",
    "KEEPTTL",
    "10",
    "-1",
    "0",
    "9223372036854775807",
    "GET",
    "*",
    "3",
    "SETNAME",
    "EXAT",
    "PXAT",
    "PERSIST",
    "ENCODING",
    "MATCH",
    "COUNT",
    "REPLACE",
    "1.5e3",
];

/// Pipelined requests: RESP arrays and inline lines, commands with plausible arguments.
pub fn resp_requests(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let mut args = vec![rng.pick(&COMMANDS).as_bytes().to_vec()];
        for _ in 0..rng.below(5) {
            args.push(match rng.below(3) {
                0 => rng.pick(&WORDS).as_bytes().to_vec(),
                1 => rng.bytes_upto(40),
                _ => vec![b'v'; rng.below(3000)],
            });
        }
        if rng.one_in(4) && args.iter().all(|a| a.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'*')) {
            out.extend(args.join(&b' '));
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend(format!("*{}\r\n", args.len()).as_bytes());
            for a in &args {
                out.extend(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out
}

/// The site configuration both site-link targets use: three sites.
pub fn site_config(id: u8, policy: Policy) -> SiteConfig {
    SiteConfig {
        site_id: id,
        policy,
        sites: (1..=3).map(|i| SiteAddr { id: i, ip: [10, 78, i, 10], port: 6380 }).collect(),
        wall_base_ms: 1_700_000_000_000,
        max_log_bytes: 1 << 20,
        max_memory_bytes: 1 << 20,
    }
}

/// What site 2 sends site 1 on the site link: HELLO, then its writes (made by running
/// real commands at site 2), sometimes an ACK, REFUSE or WELCOME in between.
pub fn site_link_stream(rng: &mut Rng, policy: Policy) -> Vec<u8> {
    let mut site = Store::with_sites(Limits::default(), site_config(2, policy));
    let mut conn = Conn::new();
    let info = ServerInfo::default();
    let mut sink = Vec::new();
    for i in 0..1 + rng.below(6) {
        let key = *rng.pick(&["a", "b", "n", "s"]);
        let line = match rng.below(5) {
            0 => format!("SET {key} v{i}\r\n"),
            1 => format!("INCRBY {key} {}\r\n", rng.below(100)),
            2 => format!("SADD {key} m{i}\r\n"),
            3 => format!("APPEND {key} x\r\n"),
            _ => format!("DEL {key}\r\n"),
        };
        conn.feed(line.as_bytes(), &mut site, 1_000 + i as u64, &info, &mut sink);
    }
    let store = site.sites().expect("a sites store");
    let c = store.config();
    let mut out = Vec::new();
    wire::encode(
        &wire::Frame::Hello {
            version: resp_kv::sites::link::PROTOCOL_VERSION,
            site: 2,
            sites_digest: c.sites_digest(),
            policy: wire::policy_byte(policy),
        },
        &mut out,
    );
    let mut seq = 1;
    while let Some(entry) = store.log_entry(seq) {
        out.extend_from_slice(&entry.frame);
        seq += 1;
        if rng.one_in(6) {
            let frame = match rng.below(3) {
                0 => wire::Frame::Ack { seq: rng.interesting_u64() },
                1 => wire::Frame::Welcome { site: rng.byte(), resume_after: rng.interesting_u64() },
                _ => wire::Frame::Refuse { reason: rng.bytes_upto(40) },
            };
            wire::encode(&frame, &mut out);
        }
    }
    out
}
