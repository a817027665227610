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
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, Ipv4Address};

const PORT: u16 = 6379;
/// smoltcp has no listen backlog: a SYN that finds no listening socket is reset. So the
/// server keeps at least this many sockets listening, adding sockets as connections
/// take them (a client such as redis-benchmark opens all its connections at once,
/// while the previous ones are still closing), up to `MAX_SOCKETS`.
const MIN_LISTENING: usize = 64;
const MAX_SOCKETS: usize = 512;
const SOCKET_BUFFER: usize = 16 * 1024;
/// TCP sequence numbers and the like come from this seed: primary and backup must agree.
const RANDOM_SEED: u64 = 0x6674_766d_6d5f_6b76;

struct Client {
    handle: SocketHandle,
    conn: Conn,
    out: Vec<u8>,
    sent: usize,
    closing: bool,
}

impl Client {
    fn reset(&mut self) {
        self.conn = Conn::new();
        self.out.clear();
        self.sent = 0;
        self.closing = false;
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
        "kv-server: listening on {}.{}.{}.{}:{PORT}, up to {} connections, {} MiB heap",
        a,
        b,
        c,
        d,
        MAX_SOCKETS - MIN_LISTENING,
        heap >> 20
    );
    let mut waits = 0u64;
    let mut status = ReplicationStatus { read_at_tick: u64::MAX, protected: false };
    loop {
        let now = clock.now();
        iface.poll(now, &mut nic, &mut sockets);
        let established =
            clients.iter().filter(|c| sockets.get::<tcp::Socket>(c.handle).state() == tcp::State::Established).count();
        let info = ServerInfo {
            role: "master",
            protected: status.protected(),
            uptime_ms: clock.now_ms(),
            connected_clients: established,
            extra: "",
        };
        let mut busy = false;
        for client in clients.iter_mut() {
            busy |= service(sockets.get_mut::<tcp::Socket>(client.handle), client, &mut store, &clock, &info);
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
        let _ = s.listen(PORT);
        clients.push(Client { handle: sockets.add(s), conn: Conn::new(), out: Vec::new(), sent: 0, closing: false });
    }
}

/// Moves one connection forward; true if it did anything.
fn service(sock: &mut tcp::Socket, client: &mut Client, store: &mut Store, clock: &Clock, info: &ServerInfo) -> bool {
    if !sock.is_open() {
        client.reset();
        let _ = sock.listen(PORT);
        return false;
    }
    let mut busy = flush(sock, client);
    if client.sent < client.out.len() {
        return busy;
    }
    client.out.clear();
    client.sent = 0;
    if client.closing {
        sock.close();
        return busy;
    }
    let now_ms = clock.now_ms();
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
        busy = true;
    } else if !sock.may_recv() && sock.state() == tcp::State::CloseWait {
        // The client is done sending and everything it asked is answered.
        sock.close();
    }
    if status == ConnStatus::Close {
        client.closing = true;
    }
    busy |= flush(sock, client);
    busy
}

fn flush(sock: &mut tcp::Socket, client: &mut Client) -> bool {
    if client.sent >= client.out.len() || !sock.can_send() {
        return false;
    }
    let n = sock.send_slice(&client.out[client.sent..]).unwrap_or(0);
    client.sent += n;
    n > 0
}
