//! Telling clients, at go-live, that the outage is over: the TCP flows the guest
//! had in recent output, and the frames that make a stock Linux client resend
//! the request it lost with the old primary sooner. Pure: frames in, frames out.
//!
//! What works was measured (`scripts/probe-client-retransmit.sh`, docs/client-gap.md):
//! duplicate ACKs, a D-SACK, a window update or the guest's last segment again
//! change nothing for a client with one small request outstanding (Linux needs
//! more outstanding segments, or SACKed data after the hole, before it calls a
//! segment lost; its tail-loss probe waits 2·SRTT + 200 ms for a single
//! segment). What does change something is RFC 6069: an ICMP *host unreachable*
//! quoting the client's oldest unacknowledged byte makes a client whose
//! retransmission timer has already backed off take one backoff step back and
//! resend at the un-backed-off time (Linux `tcp_ld_RTO_revert`). That is the
//! case of a failover that took longer than the client's first retransmission
//! (a hang, a partition, an election): measured 830 → 618 ms for a 450 ms
//! outage. After a kill -9 (go-live in ~2 ms, before the client's first timer)
//! it does nothing, and nothing else sent from the server's side does either.
//!
//! Safe because the client checks the quote: an ICMP that does not name one of
//! its connections at exactly its oldest unacknowledged byte is ignored, and
//! one that does only undoes a backoff (a connection that never backed off, or
//! already took it back, is left as it is). Linux also records EHOSTUNREACH as
//! the connection's *soft* error, reported only if the connection later times
//! out (or at once to a socket with IP_RECVERR set, which TCP clients rarely set).
//! These frames come from the host, not the guest: no guest state changes,
//! nothing is logged.
use crate::host::tap::Tap;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Flows with guest output this recent are nudged at go-live.
pub const RECENT: Duration = Duration::from_secs(60);
/// When the nudges go out, after go-live: a TAP port that has just come up may not
/// forward yet (the gratuitous ARPs are spread out for the same reason), and a
/// repeat is harmless (a client with no backoff left ignores it).
pub const SCHEDULE_MS: [u64; 4] = [0, 10, 50, 150];
/// At most this many flows are remembered (the least recently seen go first).
pub const MAX_FLOWS: usize = 1024;
/// ICMPs per flow: each takes back one backoff step, so this many undo a
/// backoff of up to 2^6 × the client's RTO (about 13 s at Linux's 200 ms floor).
pub const STEPS_PER_FLOW: usize = 6;

const ETH_IPV4: [u8; 2] = [0x08, 0x00];
const PROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// One TCP connection as the guest last spoke on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub guest_mac: [u8; 6],
    /// Where the guest sent it: the client, or the router in front of it.
    pub next_hop_mac: [u8; 6],
    pub guest_ip: [u8; 4],
    pub client_ip: [u8; 4],
    pub guest_port: u16,
    pub client_port: u16,
    /// The guest's last acknowledgement: the client's oldest unacknowledged byte.
    pub ack: u32,
}

type FlowKey = ([u8; 4], u16, u16);

/// The flows in the guest's recent output.
#[derive(Debug, Default)]
pub struct FlowTracker {
    flows: HashMap<FlowKey, (Flow, Instant)>,
}

impl FlowTracker {
    /// Notes one frame the guest sent at `now`. Anything that is not an IPv4 TCP
    /// segment with ACK set is ignored; a FIN or RST ends the flow.
    pub fn observe(&mut self, frame: &[u8], now: Instant) {
        let Some((flow, flags)) = parse(frame) else { return };
        let key = (flow.client_ip, flow.client_port, flow.guest_port);
        if flags & (TCP_FIN | TCP_RST) != 0 {
            self.flows.remove(&key);
            return;
        }
        if flags & TCP_ACK == 0 {
            return;
        }
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            if let Some(oldest) = self.flows.iter().min_by_key(|(_, (_, seen))| *seen).map(|(k, _)| *k) {
                self.flows.remove(&oldest);
            }
        }
        self.flows.insert(key, (flow, now));
    }

    /// Flows remembered now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is remembered.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The frames to send at go-live (`now`): [`STEPS_PER_FLOW`] ICMP host-unreachables
    /// per flow seen within [`RECENT`].
    pub fn nudges(&self, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (flow, seen) in self.flows.values() {
            if now.saturating_duration_since(*seen) <= RECENT {
                let frame = host_unreachable(flow);
                out.extend(std::iter::repeat_n(frame, STEPS_PER_FLOW));
            }
        }
        out
    }
}

/// Sends `frames` on `tap` at each time of [`SCHEDULE_MS`], from a thread of its own
/// (`nudge`), so the caller does not wait.
pub fn send_spread(tap: Tap, frames: Vec<Vec<u8>>) -> std::io::Result<()> {
    std::thread::Builder::new().name("nudge".into()).spawn(move || {
        let mut elapsed = 0;
        for at in SCHEDULE_MS {
            std::thread::sleep(Duration::from_millis(at - elapsed));
            elapsed = at;
            frames.iter().for_each(|f| tap.send(f));
        }
    })?;
    Ok(())
}

/// The flow of an IPv4 TCP frame the guest sent, and its TCP flags.
fn parse(f: &[u8]) -> Option<(Flow, u8)> {
    if f.len() < 14 + 20 || f[12..14] != ETH_IPV4 || f[14] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let t = 14 + ihl;
    if ihl < 20 || f[23] != PROTO_TCP || f.len() < t + 20 {
        return None;
    }
    // A fragment other than the first has no TCP header where we would read one.
    if u16::from_be_bytes([f[20], f[21]]) & 0x1fff != 0 {
        return None;
    }
    let at = |i: usize| -> [u8; 4] { [f[i], f[i + 1], f[i + 2], f[i + 3]] };
    let flow = Flow {
        guest_mac: [f[6], f[7], f[8], f[9], f[10], f[11]],
        next_hop_mac: [f[0], f[1], f[2], f[3], f[4], f[5]],
        guest_ip: at(26),
        client_ip: at(30),
        guest_port: u16::from_be_bytes([f[t], f[t + 1]]),
        client_port: u16::from_be_bytes([f[t + 2], f[t + 3]]),
        ack: u32::from_be_bytes(at(t + 8)),
    };
    Some((flow, f[t + 13]))
}

/// RFC 1071 checksum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(total_len: u16, protocol: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total_len.to_be_bytes());
    h[6] = 0x40; // don't fragment
    h[8] = 64;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// An ICMP destination unreachable (host unreachable) from the guest's address to the
/// client, quoting the client's segment at its oldest unacknowledged byte.
pub fn host_unreachable(flow: &Flow) -> Vec<u8> {
    // The quote: the client's IPv4 header and the first 8 bytes of its TCP header.
    let quoted_ip = ipv4_header(40, PROTO_TCP, flow.client_ip, flow.guest_ip);
    let mut icmp = vec![3, 1, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted_ip);
    icmp.extend_from_slice(&flow.client_port.to_be_bytes());
    icmp.extend_from_slice(&flow.guest_port.to_be_bytes());
    icmp.extend_from_slice(&flow.ack.to_be_bytes());
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let ip = ipv4_header(20 + icmp.len() as u16, 1, flow.guest_ip, flow.client_ip);
    let mut f = Vec::with_capacity(14 + 20 + icmp.len());
    f.extend_from_slice(&flow.next_hop_mac);
    f.extend_from_slice(&flow.guest_mac);
    f.extend_from_slice(&ETH_IPV4);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 10];
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const GUEST: [u8; 4] = [10, 77, 0, 10];
    const CLIENT: [u8; 4] = [10, 77, 0, 99];

    /// A made-up segment from the guest (port 6379) to the client.
    fn segment(client_port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&6379u16.to_be_bytes());
        tcp.extend_from_slice(&client_port.to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.extend_from_slice(&[0x50, flags, 0x10, 0x00, 0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        let ip = ipv4_header(20 + tcp.len() as u16, PROTO_TCP, GUEST, CLIENT);
        [&CLIENT_MAC[..], &GUEST_MAC[..], &ETH_IPV4[..], &ip[..], &tcp[..]].concat()
    }

    #[test]
    fn the_nudge_quotes_the_clients_oldest_unacknowledged_byte() {
        let mut t = FlowTracker::default();
        let now = Instant::now();
        t.observe(&segment(40000, 1000, 5000, TCP_ACK, b"+OK\r\n"), now);
        t.observe(&segment(40000, 1005, 5031, TCP_ACK | 0x08, b":7\r\n"), now);
        let frames = t.nudges(now);
        assert_eq!(frames.len(), STEPS_PER_FLOW, "one flow, {STEPS_PER_FLOW} steps");
        let f = &frames[0];
        assert_eq!(&f[0..6], &CLIENT_MAC, "to where the guest sends");
        assert_eq!(&f[6..12], &GUEST_MAC, "from the guest's MAC");
        assert_eq!(f[14 + 9], 1, "ICMP");
        assert_eq!(&f[26..30], &GUEST, "from the guest's address");
        assert_eq!(&f[30..34], &CLIENT);
        assert_eq!(checksum(&f[14..34]), 0, "IPv4 header checksum");
        let icmp = &f[34..];
        assert_eq!((icmp[0], icmp[1]), (3, 1), "destination unreachable, host unreachable");
        assert_eq!(checksum(icmp), 0, "ICMP checksum");
        let quoted = &icmp[8..];
        assert_eq!(&quoted[12..16], &CLIENT, "the quoted segment is the client's");
        assert_eq!(&quoted[16..20], &GUEST);
        assert_eq!(checksum(&quoted[..20]), 0, "quoted header checksum");
        assert_eq!(u16::from_be_bytes([quoted[20], quoted[21]]), 40000, "client port");
        assert_eq!(u16::from_be_bytes([quoted[22], quoted[23]]), 6379, "guest port");
        let seq = u32::from_be_bytes([quoted[24], quoted[25], quoted[26], quoted[27]]);
        assert_eq!(seq, 5031, "the guest's last ack, not an earlier one");
    }

    #[test]
    fn a_closed_flow_and_frames_that_are_not_tcp_are_not_nudged() {
        let mut t = FlowTracker::default();
        let now = Instant::now();
        t.observe(&segment(40001, 1, 2, TCP_ACK, b""), now);
        t.observe(&segment(40001, 1, 2, TCP_ACK | TCP_FIN, b""), now);
        t.observe(&segment(40002, 1, 2, TCP_ACK, b""), now);
        t.observe(&segment(40002, 1, 2, TCP_RST, b""), now);
        t.observe(&crate::host::tap::gratuitous_arp(GUEST_MAC, GUEST), now);
        let mut udp = segment(40003, 1, 2, TCP_ACK, b"");
        udp[14 + 9] = 17;
        t.observe(&udp, now);
        t.observe(&segment(40004, 1, 2, 0x02, b""), now); // a SYN without ACK
        t.observe(&segment(40005, 1, 2, TCP_ACK, b"")[..40], now); // cut short
        assert!(t.is_empty(), "{t:?}");
        assert!(t.nudges(now).is_empty());
    }

    #[test]
    fn flows_older_than_recent_are_not_nudged_and_younger_ones_are() {
        let mut t = FlowTracker::default();
        let start = Instant::now();
        t.observe(&segment(40010, 1, 2, TCP_ACK, b""), start);
        assert_eq!(t.nudges(start + RECENT).len(), STEPS_PER_FLOW, "at the limit: still recent");
        assert!(t.nudges(start + RECENT + Duration::from_millis(1)).is_empty(), "past the limit");
    }

    #[test]
    fn past_max_flows_the_least_recently_seen_is_forgotten() {
        let mut t = FlowTracker::default();
        let start = Instant::now();
        for i in 0..MAX_FLOWS {
            t.observe(&segment(10000 + i as u16, 1, 2, TCP_ACK, b""), start + Duration::from_millis(i as u64));
        }
        assert_eq!(t.len(), MAX_FLOWS);
        let later = start + Duration::from_secs(1);
        t.observe(&segment(9999, 1, 2, TCP_ACK, b""), later);
        assert_eq!(t.len(), MAX_FLOWS, "still at the limit");
        assert!(!t.flows.contains_key(&(CLIENT, 10000, 6379)), "the oldest flow is gone");
        assert!(t.flows.contains_key(&(CLIENT, 9999, 6379)), "the new flow is in");
        assert!(t.flows.contains_key(&(CLIENT, 10001, 6379)), "the second oldest stays");
    }
}
