//! Mirrored input: a follower's host keeps the frames clients sent to the guest,
//! so that at go-live the new primary has the request that died with the old one.
//!
//! Why: after `kill -9` of the primary a client whose request reached the old
//! primary but not its log (or not the old primary at all) waits for its own
//! retransmission timer, ≥ 200 ms on Linux, whatever the new primary's host
//! sends (docs/client-gap.md). With a port mirror on the switch (SPAN, a hub;
//! `scripts/netns.sh mirror on` in the test topology) every follower's TAP also
//! receives the frames sent to the guest's MAC. A follower started with
//! `--mirrored-input` opens its TAP at once and reads those frames into a
//! [`MirrorRing`] — never into the replaying guest, which gets only logged input,
//! so replay stays exact. The replay tells the ring each frame it delivers from
//! the log, and a replay that starts from a state transfer empties the ring. At
//! go-live, after the whole log is replayed, the frames of the last
//! [`MIRROR_WINDOW`] that the replay did not deliver go to the now-live guest as
//! ordinary input (so they are logged for its own followers), before any frame
//! read later: the lost request is answered in about a millisecond.
//!
//! Which frames: only IPv4 TCP addressed to the guest's MAC, and ARP asking for
//! the guest's address ([`keeps`]). A frame the old primary delivered is matched
//! (by content) against what the replay delivered and not injected again; if a
//! copy slipped through anyway (the match is by exact bytes, and a frame older
//! than the window is forgotten on both sides), TCP drops it: a segment whose
//! data the guest already acknowledged is a duplicate to it (RFC 9293: it ACKs
//! and discards it), and a repeated ARP request gets one more reply. A duplicate
//! UDP datagram would reach a UDP service, so UDP (and everything else) is not
//! kept: the client's own retransmission covers it, as without mirroring.
use crate::host::tap::{Tap, ETH_ARP};
use crossbeam_channel::{Sender, TrySendError};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The ring holds at most this many frames (the oldest go first).
pub const MAX_MIRROR_FRAMES: usize = 4096;
/// ... and at most this many bytes of frames.
pub const MAX_MIRROR_BYTES: usize = 4 << 20;
/// Frames older than this at go-live are not injected: the client has resent
/// anything older by then (its first retransmission comes after ~200 ms), and
/// what the replay delivered is remembered for as long.
pub const MIRROR_WINDOW: Duration = Duration::from_secs(1);

const ETH_IPV4: [u8; 2] = [0x08, 0x00];
const PROTO_TCP: u8 = 6;

/// Errors of setting up mirrored input.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("cannot start the mirrored-input reader thread ({0}); the host is out of threads or memory")]
    Thread(#[source] std::io::Error),
}

/// Whether a frame from the network is kept for go-live: IPv4 TCP addressed to the
/// guest's MAC, or ARP (to its MAC, or broadcast) asking for the guest's address; not
/// the guest's own frames seen from the network (the module doc says why nothing else).
pub fn keeps(frame: &[u8], guest: &GuestAddr) -> bool {
    if frame.len() < 14 || frame[6..12] == guest.mac {
        return false;
    }
    let to_guest = frame[0..6] == guest.mac;
    match [frame[12], frame[13]] {
        ETH_ARP => (to_guest || frame[0..6] == [0xff; 6]) && frame.len() >= 42 && frame[38..42] == guest.ip,
        _ if !to_guest => false,
        ETH_IPV4 => frame.len() >= 14 + 20 && frame[14] >> 4 == 4 && frame[23] == PROTO_TCP,
        _ => false,
    }
}

/// The guest's addresses, as the network sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAddr {
    pub mac: [u8; 6],
    pub ip: [u8; 4],
}

fn content_hash(frame: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    frame.hash(&mut h);
    h.finish()
}

struct Kept {
    at: Instant,
    hash: u64,
    frame: Vec<u8>,
}

/// The frames a follower's host received for its guest, and what its replay
/// delivered, over the last [`MIRROR_WINDOW`]. Pure: time is passed in.
#[derive(Default)]
pub struct MirrorRing {
    frames: VecDeque<Kept>,
    bytes: usize,
    /// Content hashes of the frames the replay delivered, oldest first.
    delivered: VecDeque<(Instant, u64)>,
    /// Frames pushed out by the limits before their time.
    evicted: u64,
}

impl MirrorRing {
    /// Keeps `frame`, received at `now` (the caller checked [`keeps`]).
    pub fn push(&mut self, now: Instant, frame: Vec<u8>) {
        self.expire(now);
        if frame.len() > MAX_MIRROR_BYTES {
            self.evicted += 1;
            return;
        }
        self.bytes += frame.len();
        self.frames.push_back(Kept { at: now, hash: content_hash(&frame), frame });
        while self.frames.len() > MAX_MIRROR_FRAMES || self.bytes > MAX_MIRROR_BYTES {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.frame.len();
                self.evicted += 1;
            }
        }
    }

    /// The replay delivered `frame` to the guest at `now`: the old primary had it.
    pub fn note_delivered(&mut self, now: Instant, frame: &[u8]) {
        self.expire(now);
        self.delivered.push_back((now, content_hash(frame)));
        if self.delivered.len() > MAX_MIRROR_FRAMES {
            self.delivered.pop_front();
        }
    }

    /// Forgets every frame held and every delivery noted: a replay starts from a state
    /// that already holds what the primary had received (its log holds the rest).
    pub fn forget(&mut self) {
        self.frames.clear();
        self.delivered.clear();
        self.bytes = 0;
    }

    /// Frames held now.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Frames pushed out by [`MAX_MIRROR_FRAMES`] or [`MAX_MIRROR_BYTES`] so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn expire(&mut self, now: Instant) {
        let old = |at: Instant| now.saturating_duration_since(at) > MIRROR_WINDOW;
        while self.frames.front().is_some_and(|k| old(k.at)) {
            if let Some(k) = self.frames.pop_front() {
                self.bytes -= k.frame.len();
            }
        }
        while self.delivered.front().is_some_and(|(at, _)| old(*at)) {
            self.delivered.pop_front();
        }
    }

    /// Empties the ring at go-live (`now`): the frames of the window the replay did not
    /// deliver, in the order they arrived. Each delivered frame cancels one held copy
    /// with the same content (the earliest), so a client's retransmission of a segment
    /// the old primary had is still injected if only its first copy was delivered.
    pub fn take_for_injection(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.expire(now);
        let mut cancel: HashMap<u64, usize> = HashMap::new();
        for (_, hash) in self.delivered.drain(..) {
            *cancel.entry(hash).or_default() += 1;
        }
        self.bytes = 0;
        let mut out = Vec::new();
        for k in self.frames.drain(..) {
            match cancel.get_mut(&k.hash) {
                Some(n) if *n > 0 => *n -= 1,
                _ => out.push(k.frame),
            }
        }
        out
    }
}

/// Where frames read from the TAP go now.
enum Route<T> {
    /// Into the ring (a follower: its guest replays).
    Ring(MirrorRing),
    /// To the live VM.
    Live(Sender<T>, fn(Vec<u8>) -> T),
}

/// A follower's mirrored input: the ring until go-live, then the live VM. Shared by
/// the `nic-mirror` reader thread, the replay (which notes what it delivers) and
/// the go-live path.
pub struct Mirror<T> {
    guest: GuestAddr,
    route: Mutex<Route<T>>,
}

/// A frame handed to the live VM as input.
pub type LiveWrap<T> = fn(Vec<u8>) -> T;

impl<T: Send + 'static> Mirror<T> {
    /// A mirror for `guest`, holding frames until go-live.
    pub fn new(guest: GuestAddr) -> Arc<Mirror<T>> {
        Arc::new(Mirror { guest, route: Mutex::new(Route::Ring(MirrorRing::default())) })
    }

    fn lock(&self) -> MutexGuard<'_, Route<T>> {
        self.route.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The replay delivered this frame from the log.
    pub fn note_delivered(&self, frame: &[u8]) {
        if let Route::Ring(ring) = &mut *self.lock() {
            ring.note_delivered(Instant::now(), frame);
        }
    }

    /// A replay starts from a state transfer: frames held before it are in that state
    /// (or in the log to come, which cancels them), so injecting them again could only
    /// duplicate them.
    pub fn replay_starts(&self) {
        if let Route::Ring(ring) = &mut *self.lock() {
            ring.forget();
        }
    }

    /// Starts `nic-mirror`, which reads `tap` until the TAP fails or the live VM is gone.
    pub fn spawn_reader(self: &Arc<Self>, tap: &Tap) -> Result<(), MirrorError> {
        let me = self.clone();
        let tap = tap.clone();
        std::thread::Builder::new()
            .name("nic-mirror".into())
            .spawn(move || me.read_loop(&tap))
            .map(|_| ())
            .map_err(MirrorError::Thread)
    }

    fn read_loop(&self, tap: &Tap) {
        let mut buf = vec![0u8; crate::host::tap::MAX_FRAME];
        loop {
            let n = match tap.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(tap = %tap.name(), "reading the TAP failed, NIC receive stops: {e}");
                    return;
                }
            };
            let frame = &buf[..n];
            let live = match &mut *self.lock() {
                Route::Ring(ring) => {
                    if keeps(frame, &self.guest) {
                        ring.push(Instant::now(), frame.to_vec());
                    }
                    continue;
                }
                Route::Live(to, wrap) => (to.clone(), *wrap),
            };
            match live.0.try_send((live.1)(frame.to_vec())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::debug!(tap = %tap.name(), "receive queue full, frame dropped"),
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Go-live: sends the ring's frames the replay did not deliver to `to`, then routes
    /// every frame read from now on there. Returns how many were injected. Done under
    /// the lock the reader takes for each frame, so no later frame overtakes them.
    pub fn go_live(&self, to: &Sender<T>, wrap: LiveWrap<T>) -> usize {
        let mut route = self.lock();
        let frames = match &mut *route {
            Route::Ring(ring) => {
                if ring.evicted() > 0 {
                    tracing::warn!(
                        evicted = ring.evicted(),
                        "mirrored input: frames were pushed out of the ring by its limits"
                    );
                }
                ring.take_for_injection(Instant::now())
            }
            Route::Live(..) => Vec::new(),
        };
        let mut injected = 0;
        for f in frames {
            if to.try_send(wrap(f)).is_ok() {
                injected += 1;
            }
        }
        *route = Route::Live(to.clone(), wrap);
        injected
    }

    /// A member elected at boot: its fresh VM gets what is read from now on, nothing held.
    pub fn pass_through(&self, to: &Sender<T>, wrap: LiveWrap<T>) {
        *self.lock() = Route::Live(to.clone(), wrap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0, 0x4d, 0, 0x0a];
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
    const GUEST: GuestAddr = GuestAddr { mac: GUEST_MAC, ip: [10, 77, 0, 10] };

    /// An ARP request from `src` to `dst` asking for `target`.
    fn arp(dst: [u8; 6], src: [u8; 6], target: [u8; 4]) -> Vec<u8> {
        let mut f = [&dst[..], &src[..], &ETH_ARP[..], &[0, 1, 8, 0, 6, 4, 0, 1][..], &src[..]].concat();
        f.extend_from_slice(&[10, 77, 0, 100, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&target);
        f
    }

    /// A frame to `dst` with `ethertype` and, for IPv4, `proto`; `tag` makes contents differ.
    fn frame(dst: [u8; 6], ethertype: [u8; 2], proto: u8, tag: u8) -> Vec<u8> {
        let mut f = [&dst[..], &CLIENT_MAC[..], &ethertype[..]].concat();
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[9] = proto;
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[tag; 20]);
        f
    }

    fn tcp(tag: u8) -> Vec<u8> {
        frame(GUEST_MAC, ETH_IPV4, PROTO_TCP, tag)
    }

    #[test]
    fn only_arp_and_tcp_to_the_guest_are_kept() {
        assert!(keeps(&tcp(1), &GUEST));
        assert!(keeps(&arp(GUEST_MAC, CLIENT_MAC, GUEST.ip), &GUEST), "a unicast ARP probe");
        assert!(keeps(&arp([0xff; 6], CLIENT_MAC, GUEST.ip), &GUEST), "a broadcast ARP request for the guest");
        assert!(!keeps(&arp([0xff; 6], CLIENT_MAC, [10, 77, 0, 2]), &GUEST), "an ARP request for another host");
        assert!(!keeps(&arp([0xff; 6], GUEST_MAC, GUEST.ip), &GUEST), "the guest's own gratuitous ARP");
        assert!(!keeps(&arp([0xff; 6], CLIENT_MAC, GUEST.ip)[..40], &GUEST), "an ARP cut short");
        assert!(!keeps(&frame(GUEST_MAC, ETH_IPV4, 17, 1), &GUEST), "UDP: a duplicate would reach the service");
        assert!(!keeps(&frame(GUEST_MAC, ETH_IPV4, 1, 1), &GUEST), "ICMP");
        assert!(!keeps(&frame(GUEST_MAC, [0x86, 0xdd], PROTO_TCP, 1), &GUEST), "IPv6");
        assert!(!keeps(&frame(CLIENT_MAC, ETH_IPV4, PROTO_TCP, 1), &GUEST), "to another MAC");
        assert!(!keeps(&frame([0xff; 6], ETH_IPV4, PROTO_TCP, 1), &GUEST), "TCP to broadcast");
        assert!(!keeps(&tcp(1)[..30], &GUEST), "cut short");
        assert!(!keeps(&[], &GUEST));
    }

    #[test]
    fn what_the_replay_delivered_is_not_injected_again_and_the_rest_keeps_its_order() {
        let mut r = MirrorRing::default();
        let t = Instant::now();
        for tag in 1..=4 {
            r.push(t, tcp(tag));
        }
        r.note_delivered(t, &tcp(1));
        r.note_delivered(t, &tcp(3));
        r.note_delivered(t, &tcp(9)); // delivered, but never mirrored: cancels nothing
        assert_eq!(r.take_for_injection(t), vec![tcp(2), tcp(4)]);
        assert!(r.is_empty(), "go-live empties the ring");
        assert!(r.take_for_injection(t).is_empty(), "and what was taken is not injected twice");
    }

    #[test]
    fn a_resent_copy_of_a_delivered_frame_is_still_injected() {
        // The old primary delivered the first copy; the client's retransmission of the
        // same bytes died with it.
        let mut r = MirrorRing::default();
        let t = Instant::now();
        r.push(t, tcp(5));
        r.note_delivered(t, &tcp(5));
        r.push(t + Duration::from_millis(200), tcp(5));
        assert_eq!(r.take_for_injection(t + Duration::from_millis(201)), vec![tcp(5)]);
    }

    #[test]
    fn frames_older_than_the_window_are_not_injected() {
        let mut r = MirrorRing::default();
        let t = Instant::now();
        r.push(t, tcp(1));
        r.push(t + Duration::from_millis(500), tcp(2));
        assert_eq!(r.take_for_injection(t + MIRROR_WINDOW), vec![tcp(1), tcp(2)], "at the limit: still in");
        r.push(t, tcp(1));
        r.push(t + Duration::from_millis(500), tcp(2));
        let later = t + MIRROR_WINDOW + Duration::from_millis(1);
        assert_eq!(r.take_for_injection(later), vec![tcp(2)], "past the limit: out");
    }

    #[test]
    fn a_delivery_older_than_the_window_cancels_nothing() {
        let mut r = MirrorRing::default();
        let t = Instant::now();
        r.note_delivered(t, &tcp(1));
        let later = t + MIRROR_WINDOW + Duration::from_millis(1);
        r.push(later, tcp(1));
        assert_eq!(r.take_for_injection(later), vec![tcp(1)]);
    }

    #[test]
    fn a_replay_that_starts_forgets_what_was_held_before_it() {
        let mirror: Arc<Mirror<Vec<u8>>> = Mirror::new(GUEST);
        if let Route::Ring(ring) = &mut *mirror.lock() {
            ring.push(Instant::now(), tcp(1));
        }
        mirror.note_delivered(&tcp(2));
        mirror.replay_starts();
        if let Route::Ring(ring) = &mut *mirror.lock() {
            assert!(ring.is_empty());
            ring.push(Instant::now(), tcp(2));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        assert_eq!(mirror.go_live(&tx, |f| f), 1, "the delivery noted before the restart cancels nothing after it");
        assert_eq!(rx.try_recv().ok(), Some(tcp(2)));
    }

    #[test]
    fn past_max_mirror_frames_the_oldest_go_first() {
        let mut r = MirrorRing::default();
        let t = Instant::now();
        for i in 0..MAX_MIRROR_FRAMES + 3 {
            let mut f = tcp(0);
            f.extend_from_slice(&(i as u32).to_be_bytes());
            r.push(t, f);
        }
        assert_eq!(r.len(), MAX_MIRROR_FRAMES);
        assert_eq!(r.evicted(), 3);
        let out = r.take_for_injection(t);
        assert_eq!(&out[0][out[0].len() - 4..], &3u32.to_be_bytes(), "frames 0..3 were pushed out");
    }

    #[test]
    fn past_max_mirror_bytes_the_oldest_go_first() {
        let mut r = MirrorRing::default();
        let t = Instant::now();
        let big = 60_000;
        let n = MAX_MIRROR_BYTES / big + 2;
        for i in 0..n {
            let mut f = tcp(i as u8);
            f.resize(big, i as u8);
            r.push(t, f);
        }
        assert!(r.bytes <= MAX_MIRROR_BYTES, "{} bytes held", r.bytes);
        assert_eq!(r.len(), MAX_MIRROR_BYTES / big);
        assert_eq!(r.evicted(), 2);
        let mut huge = tcp(0);
        huge.resize(MAX_MIRROR_BYTES + 1, 0);
        r.push(t, huge);
        assert_eq!(r.evicted(), 3, "a frame larger than the whole ring is not kept");
    }

    #[test]
    fn go_live_injects_before_routing_later_frames_to_the_live_vm() {
        let mirror: Arc<Mirror<Vec<u8>>> = Mirror::new(GUEST);
        if let Route::Ring(ring) = &mut *mirror.lock() {
            ring.push(Instant::now(), tcp(1));
            ring.push(Instant::now(), tcp(2));
        }
        mirror.note_delivered(&tcp(1));
        let (tx, rx) = crossbeam_channel::unbounded();
        assert_eq!(mirror.go_live(&tx, |f| f), 1);
        assert_eq!(rx.try_recv().ok(), Some(tcp(2)));
        assert!(matches!(&*mirror.lock(), Route::Live(..)), "later frames go to the live VM");
        mirror.note_delivered(&tcp(3)); // after go-live: nothing to note, no panic
    }
}
