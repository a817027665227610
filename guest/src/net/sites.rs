//! The site link on smoltcp: one listening port for peers' streams, one outgoing
//! connection per peer for ours. The protocol itself is `resp_kv::sites::link`; this
//! file only moves bytes and decides when to (re)connect.
//!
//! Everything here is driven by the tick clock and by received frames, and every
//! piece of state (cursors, the outgoing log, backoff) is guest memory, so the link
//! records, replays and fails over with the rest of the VM.
use crate::println;
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::BootInfo;
use resp_kv::sites::link::{Inbound, LinkError, Outbound};
use resp_kv::sites::{Policy, SiteAddr, SiteConfig, SiteStore};
use resp_kv::Store;
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

const LINK_BUFFER: usize = 64 * 1024;
/// Encode more records once the unsent tail is below this.
const REFILL_BELOW: usize = 16 * 1024;
// Short waits on purpose: after a partition heals, the sites catch up only once a
// link is back, and a SYN every few hundred milliseconds per peer costs nothing.
const FIRST_BACKOFF_MS: u64 = 100;
const MAX_BACKOFF_MS: u64 = 200;
/// Listening sockets kept free for peers' (re)connections: a closed connection's socket
/// lingers in TIME-WAIT, and smoltcp resets a SYN that finds no listener.
const MIN_LISTENING: usize = 2;
/// Most site-link sockets accepted at once (peers reconnecting, refused strangers).
const MAX_ACCEPTED: usize = 32;
/// A connection attempt that has not been welcomed by then is abandoned.
const CONNECT_TIMEOUT_MS: u64 = 400;
/// Records in flight and no word from the peer for this long: the path is probably
/// broken (a partition). Reconnecting beats waiting out TCP's doubling retransmission
/// timer, which after a few seconds of partition would delay catching up by seconds.
const STALL_MS: u64 = 400;
/// After the peer refused us (another --conflict or --sites: a configuration error that
/// only an operator fixes), retry this rarely, so the consoles are not flooded.
const REFUSED_BACKOFF_MS: u64 = 5_000;

/// The site configuration from boot info, if sites mode is on.
pub fn config(boot: &BootInfo, heap: usize) -> Option<SiteConfig> {
    let s = &boot.net.sites;
    if s.site_id == 0 {
        return None;
    }
    let policy = Policy::from_u8(s.conflict)?;
    let sites =
        s.sites.iter().take(usize::from(s.count)).map(|e| SiteAddr { id: e.id, ip: e.ip, port: e.port }).collect();
    Some(SiteConfig {
        site_id: s.site_id,
        policy,
        sites,
        wall_base_ms: s.boot_wall_ms.saturating_add_signed(s.clock_offset_ms),
        max_log_bytes: heap / 8,
        max_memory_bytes: heap / 3,
    })
}

/// Bytes waiting to go out on one connection.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    sent: usize,
}

impl Pending {
    fn unsent(&self) -> usize {
        self.bytes.len() - self.sent
    }

    /// Sends what the socket takes; true if it took anything.
    fn flush(&mut self, sock: &mut tcp::Socket) -> bool {
        if self.sent >= self.bytes.len() || !sock.can_send() {
            return false;
        }
        let n = sock.send_slice(&self.bytes[self.sent..]).unwrap_or(0);
        self.sent += n;
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
        } else if self.sent > LINK_BUFFER {
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
        n > 0
    }
}

struct Peer {
    addr: SiteAddr,
    handle: SocketHandle,
    link: Option<Outbound>,
    out: Pending,
    attempts: u64,
    retry_at_ms: u64,
    backoff_ms: u64,
    connected_at_ms: u64,
    /// Last time the peer said anything (WELCOME, ACK).
    heard_at_ms: u64,
    /// The last error printed: the same one again is not printed again.
    last_error: Option<LinkError>,
    up: bool,
}

struct Accepted {
    handle: SocketHandle,
    link: Inbound,
    out: Pending,
    closing: bool,
}

/// Every site-link socket of this site.
pub struct SiteLinks {
    port: u16,
    peers: Vec<Peer>,
    accepted: Vec<Accepted>,
}

fn link_socket() -> tcp::Socket<'static> {
    let mut s =
        tcp::Socket::new(tcp::SocketBuffer::new(vec![0; LINK_BUFFER]), tcp::SocketBuffer::new(vec![0; LINK_BUFFER]));
    s.set_nagle_enabled(false);
    // A dead peer must not hold the connection forever; a live one answers keep-alives.
    s.set_keep_alive(Some(smoltcp::time::Duration::from_millis(1_000)));
    s.set_timeout(Some(smoltcp::time::Duration::from_millis(5_000)));
    s
}

impl SiteLinks {
    /// Sockets for every peer and listeners for their connections.
    pub fn new(config: &SiteConfig, sockets: &mut SocketSet<'static>) -> SiteLinks {
        let port = config.me().map_or(6380, |m| m.port);
        let peers = config
            .sites
            .iter()
            .filter(|s| s.id != config.site_id)
            .map(|&addr| Peer {
                addr,
                handle: sockets.add(link_socket()),
                link: None,
                out: Pending::default(),
                attempts: 0,
                retry_at_ms: 0,
                backoff_ms: FIRST_BACKOFF_MS,
                connected_at_ms: 0,
                heard_at_ms: 0,
                last_error: None,
                up: false,
            })
            .collect::<Vec<_>>();
        println!("site-link: site {} listening on port {port}, {} peers", config.site_id, peers.len());
        let mut links = SiteLinks { port, peers, accepted: Vec::new() };
        links.keep_listening(sockets);
        links
    }

    /// Adds listening sockets until `MIN_LISTENING` wait for connections.
    fn keep_listening(&mut self, sockets: &mut SocketSet<'static>) {
        let listening = self.accepted.iter().filter(|a| sockets.get::<tcp::Socket>(a.handle).is_listening()).count();
        for _ in listening..MIN_LISTENING {
            if self.accepted.len() >= MAX_ACCEPTED {
                return;
            }
            let mut s = link_socket();
            let _ = s.listen(self.port);
            let handle = sockets.add(s);
            self.accepted.push(Accepted { handle, link: Inbound::new(), out: Pending::default(), closing: false });
        }
    }

    /// Moves every link forward; true if anything happened.
    pub fn poll(
        &mut self,
        iface: &mut Interface,
        sockets: &mut SocketSet<'static>,
        store: &mut Store,
        now_ms: u64,
    ) -> bool {
        let Some(sites) = store.sites_mut() else { return false };
        let mut busy = false;
        for peer in &mut self.peers {
            busy |= poll_peer(peer, iface, sockets.get_mut::<tcp::Socket>(peer.handle), sites, now_ms);
        }
        for acc in &mut self.accepted {
            busy |= poll_accepted(acc, sockets.get_mut::<tcp::Socket>(acc.handle), sites, now_ms, self.port);
        }
        self.keep_listening(sockets);
        busy
    }
}

fn poll_peer(
    peer: &mut Peer,
    iface: &mut Interface,
    sock: &mut tcp::Socket,
    store: &mut SiteStore,
    now_ms: u64,
) -> bool {
    let id = peer.addr.id;
    let Some(link) = peer.link.as_mut() else {
        if now_ms < peer.retry_at_ms || sock.is_open() {
            return false;
        }
        // Deterministic local ports: a function of the peer and the attempt number.
        let local = 40_000 + u16::from(id) * 100 + (peer.attempts % 100) as u16;
        peer.attempts += 1;
        let [a, b, c, d] = peer.addr.ip;
        if sock.connect(iface.context(), (IpAddress::v4(a, b, c, d), peer.addr.port), local).is_ok() {
            peer.link = Some(Outbound::new(id));
            peer.out = Pending::default();
            peer.connected_at_ms = now_ms;
            peer.heard_at_ms = now_ms;
        } else {
            backoff(peer, now_ms);
        }
        return true;
    };
    let welcomed_before = link.streaming();
    let mut failed = None;
    let mut busy = false;
    if sock.can_recv() {
        let _ = sock.recv(|data| {
            if let Err(e) = link.receive(data, store) {
                failed = Some(e);
            }
            (data.len(), ())
        });
        peer.heard_at_ms = now_ms;
        busy = true;
    }
    if let Some(e) = failed {
        if peer.last_error.as_ref() != Some(&e) {
            println!("site-link: to site {id}: {e}; closing");
        }
        sock.abort();
        drop_link(peer, now_ms);
        if matches!(e, LinkError::Refused(_) | LinkError::Handshake(_)) {
            peer.retry_at_ms = now_ms + REFUSED_BACKOFF_MS;
        }
        peer.last_error = Some(e);
        return true;
    }
    if link.streaming() && !welcomed_before {
        println!("site-link: to site {id}: streaming from record {}", store.acked_by(id) + 1);
        peer.up = true;
        peer.last_error = None;
        peer.backoff_ms = FIRST_BACKOFF_MS;
    }
    let open = matches!(sock.state(), tcp::State::Established);
    if open && peer.out.unsent() < REFILL_BELOW {
        peer.out.bytes.drain(..peer.out.sent);
        peer.out.sent = 0;
        let before = peer.out.bytes.len();
        link.transmit(store, &mut peer.out.bytes, LINK_BUFFER);
        busy |= peer.out.bytes.len() > before;
    }
    busy |= peer.out.flush(sock);
    let stale = !link.streaming() && now_ms.saturating_sub(peer.connected_at_ms) > CONNECT_TIMEOUT_MS;
    let in_flight = link.streaming() && store.acked_by(id) + 1 < link.next_to_send();
    let stalled = in_flight && now_ms.saturating_sub(peer.heard_at_ms) > STALL_MS;
    if stalled {
        println!("site-link: to site {id}: no acknowledgement for {STALL_MS} ms; reconnecting");
        peer.backoff_ms = FIRST_BACKOFF_MS;
    }
    let stale = stale || stalled;
    if !sock.is_open() || stale || matches!(sock.state(), tcp::State::CloseWait | tcp::State::Closed) {
        if peer.up {
            println!("site-link: to site {id}: connection lost; reconnecting");
        }
        sock.abort();
        drop_link(peer, now_ms);
        busy = true;
    }
    busy
}

fn drop_link(peer: &mut Peer, now_ms: u64) {
    peer.link = None;
    peer.out = Pending::default();
    peer.up = false;
    backoff(peer, now_ms);
}

fn backoff(peer: &mut Peer, now_ms: u64) {
    peer.retry_at_ms = now_ms + peer.backoff_ms;
    peer.backoff_ms = (peer.backoff_ms * 2).min(MAX_BACKOFF_MS);
}

fn poll_accepted(acc: &mut Accepted, sock: &mut tcp::Socket, store: &mut SiteStore, now_ms: u64, port: u16) -> bool {
    if !sock.is_open() {
        acc.link = Inbound::new();
        acc.out = Pending::default();
        acc.closing = false;
        let _ = sock.listen(port);
        return false;
    }
    let mut busy = acc.out.flush(sock);
    if acc.closing {
        if acc.out.unsent() == 0 {
            sock.close();
        }
        return busy;
    }
    if sock.can_recv() && acc.out.unsent() < LINK_BUFFER {
        let link = &mut acc.link;
        let out = &mut acc.out.bytes;
        let mut failed = None;
        let _ = sock.recv(|data| {
            if let Err(e) = link.receive(data, store, now_ms, out) {
                failed = Some(e);
            }
            (data.len(), ())
        });
        if let Some(e) = failed {
            match acc.link.peer() {
                Some(p) => println!("site-link: from site {p}: {e}; refused and closing"),
                None => println!("site-link: from an unidentified peer: {e}; refused and closing"),
            }
            acc.closing = true;
        }
        busy = true;
    } else if sock.state() == tcp::State::CloseWait {
        sock.close();
    }
    busy |= acc.out.flush(sock);
    busy
}
