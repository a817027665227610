//! A host-side TCP front end for manual and differential testing with real Redis tools:
//! `cargo run -p resp-kv --example tcp_server -- 127.0.0.1:6390`, then point
//! `redis-cli -p 6390` or `redis-benchmark -p 6390` at it. Single-threaded and polling,
//! like the guest's loop; the guest itself uses smoltcp instead of `std::net`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use resp_kv::{Conn, ConnStatus, Limits, ServerInfo, Store};

struct Client {
    stream: TcpStream,
    conn: Conn,
    unsent: Vec<u8>,
    closing: bool,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6390".into());
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let mut store = Store::new(Limits::default());
    let mut clients: Vec<Client> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Ok((stream, _)) = listener.accept() {
            stream.set_nonblocking(true)?;
            stream.set_nodelay(true)?;
            clients.push(Client { stream, conn: Conn::new(), unsent: Vec::new(), closing: false });
        }
        let now_ms = started.elapsed().as_millis() as u64;
        store.expire_some(now_ms, 32);
        let connected = clients.len();
        let mut busy = false;
        clients.retain_mut(|c| {
            let info = ServerInfo {
                role: "master",
                protected: false,
                uptime_ms: now_ms,
                connected_clients: connected,
                max_clients: 0,
                clients_extra: "",
                extra: "ftvmm_host_example:1\r\n",
            };
            service(c, &mut store, now_ms, &info, &mut buf, &mut busy)
        });
        if !busy {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// One poll of one client; false once it should be dropped.
fn service(c: &mut Client, store: &mut Store, now_ms: u64, info: &ServerInfo, buf: &mut [u8], busy: &mut bool) -> bool {
    if c.conn.has_backlog() && c.unsent.is_empty() {
        *busy = true;
        if c.conn.feed(&[], store, now_ms, info, &mut c.unsent) == ConnStatus::Close {
            c.closing = true;
        }
    }
    if !c.closing && !c.conn.has_backlog() && c.unsent.is_empty() {
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                *busy = true;
                let status = c.conn.feed(&buf[..n], store, now_ms, info, &mut c.unsent);
                c.closing = status == ConnStatus::Close;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    while !c.unsent.is_empty() {
        match c.stream.write(&c.unsent) {
            Ok(n) => {
                *busy = true;
                c.unsent.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    !(c.closing && c.unsent.is_empty())
}
