//! Before a VM that boots as the guest's address starts serving (`ftvmm primary`,
//! `ftvmm run`), ask the network whether someone already answers for that address.
//!
//! The case it is for: a primary's host died, its backup went live, and a
//! supervisor restarts `ftvmm primary` on the old host. Without the old group's
//! name (`--group-name`) that is a new group, which the arbiter lets go live (its
//! claims are per group): two VMs of one address would serve side by side. A
//! live VM of the guest's address answers ARP, so the new primary sees it first
//! and refuses to start (exit 2, saying to start as the live VM's backup instead).
//!
//! ```text
//!   host (this VMM, before boot)                     the segment (bridge, switch)
//!   ---- probe: ARP request, sender 0.0.0.0 ---------->   (RFC 5227: what Linux answers)
//!   ---- request, sender = the subnet's network addr -->  (smoltcp answers only senders
//!                                                          in its own subnet)
//!   ... repeated PROBES times, PROBE_INTERVAL apart ...
//!   <--- any ARP frame whose sender address is the guest's address: in use, refuse
//!   nothing within the wait: the address is free, boot
//! ```
//!
//! Both probes come from a MAC of their own ([`probe_mac`], locally administered),
//! never the guest's: a frame from the guest's MAC would teach the switch that the
//! guest lives on this port, taking the live VM's traffic away while the probe runs.
//! The second probe's sender (the subnet's network address, which no host uses) may
//! land in the live guest's neighbour cache; nothing ever sends there.
//!
//! This is not a lock: two VMs started within one wait of each other both find the
//! address free. It catches the case that happens — a restart next to a VM that has
//! been live for longer than the wait. The parsing is pure and unit-tested; the
//! check itself runs against a real live VM in `tests/tests/address_check.rs`.
use crate::host::tap::{self, Tap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Probes sent (RFC 5227 sends 3 too, 1-2 s apart; a live VM here answers in
/// milliseconds, so they go much closer together).
pub const PROBES: u32 = 3;
/// Between probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// What the check found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error(
        "another machine answers for the guest's address {ip} (MAC {mac}): a VM of this address is already \
         serving — most likely the backup that went live when this host's primary died. Start this host as its \
         follower (`ftvmm backup --primary ...` or its replica group) instead; if the address is really free, \
         find who holds it, or start with --address-check-ms 0"
    )]
    InUse { ip: Ipv4Addr, mac: String },
    #[error("the address check could not use TAP {tap}: {reason}")]
    Tap { tap: String, reason: String },
}

/// The locally administered, unicast MAC the probes come from: `02:fa` and the guest's
/// last four address bytes, so that two checks of different addresses differ.
pub fn probe_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xfa, o[0], o[1], o[2], o[3]]
}

/// One ARP request from `mac`, sender address `sender`, asking for `target`.
fn request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    crate::host::tap::arp_request(mac, sender.octets(), target.octets())
}

/// The frames of one probe round for `ip/prefix`: the RFC 5227 probe, and, when the
/// subnet has a network address distinct from any host's (prefix below 31), a
/// request from it.
pub fn probes(ip: Ipv4Addr, prefix: u8) -> Vec<Vec<u8>> {
    let mac = probe_mac(ip);
    let mut frames = vec![request(mac, Ipv4Addr::UNSPECIFIED, ip)];
    if (1..31).contains(&prefix) {
        let mask = u32::MAX << (32 - u32::from(prefix));
        let network = Ipv4Addr::from(u32::from(ip) & mask);
        if network != ip {
            frames.push(request(mac, network, ip));
        }
    }
    frames
}

/// If `frame` is an ARP packet (request or reply) sent by someone claiming `ip` as
/// its own address, that someone's MAC. Anything else, however malformed: `None`.
pub fn claimant(frame: &[u8], ip: Ipv4Addr) -> Option<[u8; 6]> {
    if frame.len() < 42 || frame[12..14] != tap::ETH_ARP {
        return None;
    }
    let arp = &frame[14..42];
    // Ethernet / IPv4 / 6 / 4, request or reply.
    if arp[0..6] != [0x00, 0x01, 0x08, 0x00, 6, 4] || !matches!(arp[6..8], [0, 1] | [0, 2]) {
        return None;
    }
    let sender_ip = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let sender_mac: [u8; 6] = arp[8..14].try_into().ok()?;
    (sender_ip == ip && sender_mac != probe_mac(ip)).then_some(sender_mac)
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Sends the probes on `tap` and listens for `wait` in all: `Ok` when nobody claimed
/// `ip`. Frames read meanwhile are discarded (the VM has not booted: nothing is lost
/// that a NIC without a guest would not have dropped).
pub fn check(tap: &Tap, ip: Ipv4Addr, prefix: u8, wait: Duration) -> Result<(), AddressError> {
    let t0 = Instant::now();
    let frames = probes(ip, prefix);
    let mut buf = vec![0u8; tap::MAX_FRAME];
    let mut sent = 0;
    let mut next_probe = t0;
    while t0.elapsed() < wait {
        if sent < PROBES && Instant::now() >= next_probe {
            for f in &frames {
                tap.send(f);
            }
            sent += 1;
            next_probe += PROBE_INTERVAL;
        }
        let until = if sent < PROBES { next_probe } else { t0 + wait };
        let left = until.saturating_duration_since(Instant::now()).min(wait.saturating_sub(t0.elapsed()));
        match tap.read_timeout(&mut buf, left) {
            Ok(Some(n)) => {
                if let Some(mac) = claimant(&buf[..n], ip) {
                    tracing::error!(%ip, mac = %mac_text(mac), after_ms = t0.elapsed().as_millis() as u64,
                        "address check: the guest's address is in use");
                    return Err(AddressError::InUse { ip, mac: mac_text(mac) });
                }
            }
            Ok(None) => {}
            Err(e) => return Err(AddressError::Tap { tap: tap.name().to_string(), reason: e.to_string() }),
        }
    }
    tracing::info!(%ip, probes = sent, wait_ms = wait.as_millis() as u64, "address check: nobody answers for the guest's address");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

    fn reply_from(mac: [u8; 6], sender: Ipv4Addr, op: u8) -> Vec<u8> {
        let mut f = request(mac, sender, Ipv4Addr::new(10, 77, 0, 0));
        f[21] = op;
        f
    }

    #[test]
    fn the_probes_come_from_their_own_mac_and_ask_for_the_guest() {
        let p = probes(GUEST, 24);
        assert_eq!(p.len(), 2);
        for f in &p {
            assert_eq!(f.len(), 60);
            assert_eq!(&f[6..12], &probe_mac(GUEST), "never the guest's MAC");
            assert_eq!(f[6] & 0x03, 0x02, "locally administered, unicast");
            assert_eq!(&f[38..42], &GUEST.octets());
        }
        assert_eq!(&p[0][28..32], &[0, 0, 0, 0], "RFC 5227: sender 0.0.0.0");
        assert_eq!(&p[1][28..32], &[10, 77, 0, 0], "the subnet's network address");
        assert_eq!(probes(GUEST, 31).len(), 1, "a /31 has no spare network address");
        assert_eq!(probes(GUEST, 32).len(), 1);
        assert_eq!(probes(Ipv4Addr::new(10, 77, 0, 0), 24).len(), 1, "the network address is the guest's own");
        assert_eq!(probes(GUEST, 0).len(), 1, "prefix 0: no network address (and no overflowing shift)");
    }

    #[test]
    fn any_arp_frame_claiming_the_guests_address_is_a_claimant_and_nothing_else_is() {
        let live = [0x52, 0x54, 0, 0, 0, 10];
        assert_eq!(claimant(&reply_from(live, GUEST, 2), GUEST), Some(live), "a reply");
        assert_eq!(claimant(&reply_from(live, GUEST, 1), GUEST), Some(live), "a gratuitous ARP");
        assert_eq!(claimant(&reply_from(live, Ipv4Addr::new(10, 77, 0, 11), 2), GUEST), None, "another address");
        assert_eq!(claimant(&reply_from(live, GUEST, 3), GUEST), None, "not a request or reply");
        for own in probes(GUEST, 24) {
            assert_eq!(claimant(&own, GUEST), None, "our own probes, looped back");
        }
        // Malformed and hostile frames: none is a claim, none panics.
        let good = reply_from(live, GUEST, 2);
        for n in 0..good.len() {
            let _ = claimant(&good[..n], GUEST);
        }
        assert_eq!(claimant(&good[..41], GUEST), None, "truncated");
        let mut ipv4 = good.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(claimant(&ipv4, GUEST), None, "not ARP");
        let mut hw = good.clone();
        hw[18] = 8;
        assert_eq!(claimant(&hw, GUEST), None, "not Ethernet/IPv4 lengths");
        assert_eq!(claimant(&[], GUEST), None);
    }
}
