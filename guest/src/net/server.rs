//! The Redis-protocol key-value server: smoltcp TCP on port 6379, `resp_kv` for the protocol.
//!
//! One event loop: poll the interface, serve every connection, and when
//! nothing is left to do, wait (an exit where the monitor delivers the next
//! tick or frame). Every connection has its own socket from a fixed pool; a
//! closed socket goes back to listening.
use super::nic::Nic;
use crate::{mmio, println, ring0};
use alloc::vec;
use alloc::vec::Vec;
use guest_abi::{system, BootInfo};
use resp_kv::{Conn, ConnStatus, Limits, ServerInfo, Store};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};

const PORT: u16 = 6379;
/// smoltcp has no listen backlog: a SYN that finds no listening socket is reset. So the
/// server keeps at least this many sockets listening, adding sockets as connections
/// take them (a client such as redis-benchmark opens all its connections at once,
/// while the previous ones are still closing), up to `MAX_SOCKETS`.
const MIN_LISTENING: usize = 64;
const MAX_SOCKETS: usize = 512;
/// Connections served at once (INFO `maxclients`); past it every socket is taken and a
/// SYN is answered with a RST: the client is refused at once.
const MAX_CLIENTS: usize = MAX_SOCKETS - MIN_LISTENING;
const SOCKET_BUFFER: usize = 16 * 1024;
/// When the pool is full, connections idle (nothing received or sent) this long are
/// reset, longest idle first, so that new clients find a listening socket. Redis never
/// times out idle clients by default (`timeout 0`); neither does this server while it
/// has room.
const IDLE_UNDER_PRESSURE_MS: u64 = 5_000;
/// An idle connection is probed this often; a peer that answers nothing for
/// `PEER_TIMEOUT_MS` (its host died, a half-open connection, a SYN never completed)
/// is dropped. smoltcp runs both timers on the guest's tick clock, so they replay.
const KEEP_ALIVE_MS: u64 = 10_000;
const PEER_TIMEOUT_MS: u64 = 25_000;
/// After an error that closes a connection (an oversized request), what the client still
/// sends is read and dropped for at most this long, so that a client blocked writing
/// its request gets to read the error; then the connection is reset.
const DRAIN_MS: u64 = 5_000;
/// Input and output buffers of all connections together; past it, a connection holding
/// more than `BIG_BUFFER` is closed with an error (as Redis' `maxmemory-clients`), so
/// large requests in parallel cannot exhaust the guest's heap.
const CLIENT_MEMORY: usize = 12 * 1024 * 1024;
const BIG_BUFFER: usize = 64 * 1024;
/// TCP sequence numbers and the like come from this seed: primary and backup must agree.
const RANDOM_SEED: u64 = 0x6674_766d_6d5f_6b76;

struct Client {
    handle: SocketHandle,
    conn: Conn,
    out: Vec<u8>,
    sent: usize,
    closing: bool,
    /// Guest time of the last byte in or out (or of the accept).
    active_ms: u64,
    /// Set once the closing reply is out: drop input until then, then reset.
    drain_until_ms: Option<u64>,
}

impl Client {
    fn new(handle: SocketHandle) -> Self {
        Client {
            handle,
            conn: Conn::new(),
            out: Vec::new(),
            sent: 0,
            closing: false,
            active_ms: 0,
            drain_until_ms: None,
        }
    }

    /// The connection is gone: forget its state (its WATCHes too) and listen again.
    fn reset(&mut self, store: &mut Store) {
        self.conn.release(store);
        self.out = Vec::new();
        self.sent = 0;
        self.closing = false;
        self.drain_until_ms = None;
    }

    /// Heap bytes held for this connection's requests and replies.
    fn memory(&self) -> usize {
        self.conn.buffer_capacity() + self.out.capacity()
    }
}

/// What INFO's `# Clients` section reports beyond the count: the connection limits at
/// work. `text` is rebuilt only when a counter changes.
#[derive(Default)]
struct ClientStats {
    reaped_idle: u64,
    closed_for_memory: u64,
    text: alloc::string::String,
}

impl ClientStats {
    fn refresh(&mut self) {
        use core::fmt::Write;
        self.text.clear();
        let _ = write!(
            self.text,
            "ftvmm_client_memory_limit:{CLIENT_MEMORY}\r\nftvmm_idle_reap_ms:{IDLE_UNDER_PRESSURE_MS}\r\n\
             ftvmm_peer_timeout_ms:{PEER_TIMEOUT_MS}\r\nftvmm_clients_reaped_idle:{}\r\n\
             ftvmm_clients_closed_for_memory:{}\r\n",
            self.reaped_idle, self.closed_for_memory
        );
    }
}

/// Whether a backup protects this VM, read from the monitor at most once a tick
/// (each read is an exit).
struct ReplicationStatus {
    read_at_tick: u64,
    protected: bool,
}

impl ReplicationStatus {
    fn protected(&mut self) -> bool {
        let now = ring0::ticks();
        if now != self.read_at_tick {
            self.read_at_tick = now;
            self.protected = mmio::read(system::BASE + system::REPL_STATUS) & system::REPL_PROTECTED != 0;
        }
        self.protected
    }
}

struct Clock {
    hz: u64,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        ring0::ticks().saturating_mul(1000) / self.hz
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now_ms() as i64)
    }
}

pub fn serve(boot: &BootInfo) -> ! {
    let net = boot.net;
    if net.present != 1 || boot.tick_hz == 0 {
        println!("kv-server: needs a NIC (--guest-ip) and a timer (--tick-hz > 0)");
        mmio::power_off(2);
    }
    let heap = crate::heap::init(boot.mem_size);
    let clock = Clock { hz: u64::from(boot.tick_hz) };
    let Some(mut nic) = Nic::init() else {
        println!("kv-server: the NIC refused its rings");
        mmio::power_off(2)
    };
    let mut config = Config::new(EthernetAddress(net.mac).into());
    config.random_seed = RANDOM_SEED;
    let mut iface = Interface::new(config, &mut nic, clock.now());
    let [a, b, c, d] = net.ip;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), net.prefix_len));
    });
    if net.gateway != [0; 4] {
        let [a, b, c, d] = net.gateway;
        let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(a, b, c, d));
    }
    let mut sockets = SocketSet::new(Vec::new());
    let mut clients: Vec<Client> = Vec::new();
    keep_listening(&mut clients, &mut sockets);
    let limits = Limits { max_memory_bytes: heap / 2, ..Limits::default() };
    let site_config = super::sites::config(boot, heap);
    let mut store = match site_config.clone() {
        Some(c) => Store::with_sites(limits, c),
        None => Store::new(limits),
    };
    let mut links = site_config.as_ref().map(|c| super::sites::SiteLinks::new(c, &mut sockets));
    println!(
        "kv-server: listening on {}.{}.{}.{}:{PORT}, up to {MAX_CLIENTS} connections, values up to {} bytes, {} MiB heap",
        a,
        b,
        c,
        d,
        limits.max_bulk_bytes,
        heap >> 20
    );
    let mut stats = ClientStats::default();
    stats.refresh();
    let mut waits = 0u64;
    let mut status = ReplicationStatus { read_at_tick: u64::MAX, protected: false };
    loop {
        let now = clock.now();
        iface.poll(now, &mut nic, &mut sockets);
        let established =
            clients.iter().filter(|c| sockets.get::<tcp::Socket>(c.handle).state() == tcp::State::Established).count();
        let now_ms = clock.now_ms();
        let info = ServerInfo {
            role: "master",
            protected: status.protected(),
            uptime_ms: now_ms,
            connected_clients: established,
            max_clients: MAX_CLIENTS,
            clients_extra: &stats.text,
            extra: "",
        };
        let mut busy = false;
        let mut memory: usize = clients.iter().map(Client::memory).sum();
        let mut closed_for_memory = 0;
        for client in clients.iter_mut() {
            let sock = sockets.get_mut::<tcp::Socket>(client.handle);
            let before = client.memory();
            busy |= service(sock, client, &mut store, now_ms, &info);
            memory = memory - before + client.memory();
            if memory > CLIENT_MEMORY && client.conn.buffer_capacity() > BIG_BUFFER && !client.closing {
                memory -= client.memory();
                client.conn.release(&mut store);
                client.out.clear();
                client.sent = 0;
                client.out.extend_from_slice(
                    b"-ERR the server's memory for client buffers is full (large requests in parallel); retry\r\n",
                );
                client.closing = true;
                closed_for_memory += 1;
                busy |= flush(sock, client, now_ms);
            }
        }
        let reaped = reap_idle(&mut clients, &mut sockets, now_ms);
        if reaped + closed_for_memory > 0 {
            stats.reaped_idle += reaped;
            stats.closed_for_memory += closed_for_memory;
            stats.refresh();
        }
        keep_listening(&mut clients, &mut sockets);
        if let Some(links) = links.as_mut() {
            busy |= links.poll(&mut iface, &mut sockets, &mut store, clock.now_ms());
        }
        if busy {
            iface.poll(clock.now(), &mut nic, &mut sockets);
        }
        nic.kick_if_needed();
        store.expire_some(clock.now_ms(), 16);
        let due_now = iface.poll_delay(clock.now(), &sockets).is_some_and(|d| d.total_millis() == 0);
        if !busy && !due_now && !nic.rx_pending() {
            waits += 1;
            mmio::wait(waits);
        }
    }
}

/// Adds listening sockets until `MIN_LISTENING` of them wait for connections.
fn keep_listening(clients: &mut Vec<Client>, sockets: &mut SocketSet<'static>) {
    let listening = clients.iter().filter(|c| sockets.get::<tcp::Socket>(c.handle).is_listening()).count();
    for _ in listening..MIN_LISTENING {
        if clients.len() >= MAX_SOCKETS {
            return;
        }
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        // Like Redis (TCP_NODELAY): a reply must not wait for the ACK of an earlier one.
        // After a failover the new primary's guest may still count a reply the client
        // already has as unacknowledged, and Nagle would hold every new reply behind
        // its retransmission timer.
        s.set_nagle_enabled(false);
        s.set_keep_alive(Some(Duration::from_millis(KEEP_ALIVE_MS)));
        s.set_timeout(Some(Duration::from_millis(PEER_TIMEOUT_MS)));
        let _ = s.listen(PORT);
        clients.push(Client::new(sockets.add(s)));
    }
}

/// With the pool full and too few sockets listening, resets the connections idle longest
/// (at least `IDLE_UNDER_PRESSURE_MS`), as many as it takes to listen on
/// `MIN_LISTENING` sockets again; returns how many. Deterministic: guest time and the
/// pool's order only.
fn reap_idle(clients: &mut [Client], sockets: &mut SocketSet<'static>, now_ms: u64) -> u64 {
    if clients.len() < MAX_SOCKETS {
        return 0;
    }
    let listening = clients.iter().filter(|c| sockets.get::<tcp::Socket>(c.handle).is_listening()).count();
    let mut reaped = 0;
    for _ in listening..MIN_LISTENING {
        let oldest = clients
            .iter_mut()
            .filter(|c| {
                let s = sockets.get::<tcp::Socket>(c.handle);
                s.is_open() && !s.is_listening() && now_ms.saturating_sub(c.active_ms) >= IDLE_UNDER_PRESSURE_MS
            })
            .min_by_key(|c| c.active_ms);
        let Some(client) = oldest else { break };
        let sock = sockets.get_mut::<tcp::Socket>(client.handle);
        // The RST goes out at the next poll; the loop after it listens again.
        sock.abort();
        client.active_ms = now_ms;
        reaped += 1;
    }
    reaped
}

/// Moves one connection forward; true if it did anything.
fn service(sock: &mut tcp::Socket, client: &mut Client, store: &mut Store, now_ms: u64, info: &ServerInfo) -> bool {
    if !sock.is_open() {
        client.reset(store);
        let _ = sock.listen(PORT);
        client.active_ms = now_ms;
        return false;
    }
    if sock.is_listening() {
        client.active_ms = now_ms;
        return false;
    }
    let mut busy = flush(sock, client, now_ms);
    if client.sent < client.out.len() {
        return busy;
    }
    client.out.clear();
    if client.out.capacity() > SOCKET_BUFFER {
        // Do not keep a large reply's buffer for the connection's lifetime.
        client.out = Vec::new();
    }
    client.sent = 0;
    if client.closing {
        return drain(sock, client, now_ms) || busy;
    }
    let mut status = ConnStatus::Open;
    if client.conn.has_backlog() {
        status = client.conn.feed(&[], store, now_ms, info, &mut client.out);
        busy = true;
    } else if sock.can_recv() {
        let conn = &mut client.conn;
        let out = &mut client.out;
        let _ = sock.recv(|data| {
            status = conn.feed(data, store, now_ms, info, out);
            (data.len(), ())
        });
        client.active_ms = now_ms;
        busy = true;
    } else if !sock.may_recv() && sock.state() == tcp::State::CloseWait {
        // The client is done sending and everything it asked is answered.
        sock.close();
    }
    if status == ConnStatus::Close {
        client.closing = true;
        // Free the connection's buffers (and WATCHes) now, not when the client goes away.
        client.conn.release(store);
    }
    busy |= flush(sock, client, now_ms);
    busy
}

/// A closing connection whose last reply is out: send FIN, but keep reading and
/// dropping what the client still sends (a client blocked writing an oversized request
/// reads the error only once its write completes) until `DRAIN_MS` have passed, then
/// reset it.
fn drain(sock: &mut tcp::Socket, client: &mut Client, now_ms: u64) -> bool {
    let until = *client.drain_until_ms.get_or_insert(now_ms.saturating_add(DRAIN_MS));
    sock.close();
    let mut busy = false;
    while sock.can_recv() {
        match sock.recv(|data| (data.len(), data.len())) {
            Ok(n) if n > 0 => busy = true,
            _ => break,
        }
    }
    if now_ms > until {
        sock.abort();
    }
    busy
}

fn flush(sock: &mut tcp::Socket, client: &mut Client, now_ms: u64) -> bool {
    if client.sent >= client.out.len() || !sock.can_send() {
        return false;
    }
    let n = sock.send_slice(&client.out[client.sent..]).unwrap_or(0);
    client.sent += n;
    if n > 0 {
        client.active_ms = now_ms;
    }
    n > 0
}
