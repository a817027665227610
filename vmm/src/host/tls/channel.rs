//! [`Channel`]: one replication connection, in clear or over TLS, whose clones
//! share it between threads (the module docs of `host::tls` draw it).
use super::TlsError;
use rustls::Connection;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// No timeout, in a timeout cell.
const NONE: u64 = u64::MAX;

/// A replication connection. Clones are handles to the same connection (as
/// `TcpStream::try_clone` gives for a socket): one thread may read while another
/// writes and a third shuts it down. Timeouts are the connection's, not a handle's.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

struct Shared {
    /// Blocking, with the read timeout as its own (`SO_RCVTIMEO`), in clear and TLS alike.
    socket: TcpStream,
    /// `None` in clear: reads and writes go to the socket itself.
    tls: Option<Tls>,
    /// TLS only: how long a write waits for room in the socket, in ns (TLS writes
    /// never block in the kernel: they `poll` for room without the lock).
    write_timeout: AtomicU64,
}

/// One rustls connection: its state machine, the records its writers send, and the
/// bytes its reader received.
struct Tls {
    /// Held only for work in memory (encrypting, decrypting): never across a system
    /// call, so a reader never waits for a writer's `send`.
    conn: Mutex<Connection>,
    /// The writers' own: records taken from rustls and not yet sent. Taken before
    /// `conn` and held through the send, so records reach the socket in the order
    /// they were sealed.
    outbox: Mutex<Vec<u8>>,
    /// The reader's own: raw bytes received and not yet handed to rustls. A reader holds
    /// it while it blocks in `recv` (one reader at a time), never the connection.
    inbox: Mutex<Inbox>,
}

/// Received bytes, `buf[start..end]` not yet given to rustls.
struct Inbox {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

/// How much one `recv` takes: a log batch in one system call (rustls itself reads 4 KiB).
const INBOX_BYTES: usize = 64 * 1024;

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peer = self.shared.socket.peer_addr().ok();
        write!(f, "Channel({peer:?}, {})", if self.shared.tls.is_some() { "tls" } else { "clear" })
    }
}

fn to_cell(t: Option<Duration>) -> u64 {
    t.map_or(NONE, |d| u64::try_from(d.as_nanos()).unwrap_or(NONE - 1).max(1))
}

fn from_cell(v: u64) -> Option<Duration> {
    (v != NONE).then(|| Duration::from_nanos(v))
}

/// Waits until `socket` is ready for `events` (POLLIN or POLLOUT), an error or hang-up
/// shows on it, or `deadline` passes (`TimedOut`).
fn wait(socket: &TcpStream, events: libc::c_short, deadline: Option<Instant>) -> io::Result<()> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(ErrorKind::TimedOut, "timed out"));
                }
                // Rounded up: a 0 ms poll would spin until the deadline.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let mut fd = libc::pollfd { fd: socket.as_raw_fd(), events, revents: 0 };
        // SAFETY: one pollfd on this stack frame for the call's duration; the fd is the
        // socket's, which `socket` keeps open.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        if n > 0 {
            return Ok(());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The socket, written without ever blocking (`MSG_DONTWAIT`) even though it is in
/// blocking mode for its reader.
struct DontWait<'a>(&'a TcpStream);

impl Write for DontWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for `buf.len()` bytes for the call; the fd is the socket's,
        // which the borrow keeps open.
        let n = unsafe {
            libc::send(self.0.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what rustls has ready to `socket` until it would block (the handshake's
/// way, on a non-blocking socket). True when all went.
fn flush_tls(conn: &mut Connection, socket: &TcpStream) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut DontWait(socket)) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Moves the records rustls has sealed into `out` (memory only).
fn seal_into(conn: &mut Connection, out: &mut Vec<u8>) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    Ok(())
}

/// Sends `out` whole, waiting for room (without any lock but the outbox's) until
/// `deadline`; empties it.
fn send_all(socket: &TcpStream, out: &mut Vec<u8>, deadline: Option<Instant>) -> io::Result<()> {
    let mut sent = 0;
    while sent < out.len() {
        match DontWait(socket).write(&out[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait(socket, libc::POLLOUT, deadline)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                out.clear();
                return Err(e);
            }
        }
    }
    out.clear();
    Ok(())
}

impl Channel {
    /// A connection in clear (`--insecure`).
    pub fn plain(socket: TcpStream) -> Channel {
        let _ = socket.set_nodelay(true);
        Channel { shared: Arc::new(Shared { socket, tls: None, write_timeout: AtomicU64::new(NONE) }) }
    }

    /// Runs the TLS handshake of `conn` on `socket` until it is done or `deadline`.
    pub(super) fn handshake(socket: TcpStream, mut conn: Connection, timeout: Duration) -> Result<Channel, TlsError> {
        let deadline = Instant::now() + timeout;
        let timed_out = |e: io::Error| match e.kind() {
            ErrorKind::TimedOut => TlsError::Timeout(timeout),
            _ => TlsError::Io(e),
        };
        let _ = socket.set_nodelay(true);
        socket.set_nonblocking(true)?;
        while conn.is_handshaking() || conn.wants_write() {
            if conn.wants_write() {
                if !flush_tls(&mut conn, &socket)? {
                    wait(&socket, libc::POLLOUT, Some(deadline)).map_err(timed_out)?;
                }
                continue;
            }
            match conn.read_tls(&mut &socket) {
                Ok(0) => return Err(TlsError::Closed),
                Ok(_) => {
                    if let Err(e) = conn.process_new_packets() {
                        // The alert tells the peer why (best effort: it may be gone).
                        let _ = flush_tls(&mut conn, &socket);
                        return Err(TlsError::Rejected(e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    wait(&socket, libc::POLLIN, Some(deadline)).map_err(timed_out)?
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
        }
        // From here on the reader blocks in recv (outside the lock) and writes never block.
        socket.set_nonblocking(false)?;
        let inbox = Inbox { buf: vec![0u8; INBOX_BYTES].into_boxed_slice(), start: 0, end: 0 };
        let tls = Tls { conn: Mutex::new(conn), outbox: Mutex::new(Vec::new()), inbox: Mutex::new(inbox) };
        Ok(Channel { shared: Arc::new(Shared { socket, tls: Some(tls), write_timeout: AtomicU64::new(NONE) }) })
    }

    /// Whether it is encrypted.
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// Another handle to this connection.
    pub fn try_clone(&self) -> io::Result<Channel> {
        Ok(self.clone())
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.peer_addr()
    }

    /// Reads wait at most this long (`None`: forever); then they fail with
    /// `WouldBlock` or `TimedOut`.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.shared.socket.set_read_timeout(timeout)
    }

    /// A write waits at most this long for room in the socket.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self.shared.tls {
            None => self.shared.socket.set_write_timeout(timeout),
            Some(_) => {
                self.shared.write_timeout.store(to_cell(timeout), Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// Shuts the connection down. `Both` takes no lock, so it ends a read or write
    /// blocked in another thread at once; `Write` (a clean end) first tells a TLS
    /// peer so (close_notify).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let (Some(tls), Shutdown::Write) = (&self.shared.tls, how) {
            let deadline = Instant::now()
                + from_cell(self.shared.write_timeout.load(Ordering::SeqCst)).unwrap_or(Duration::from_secs(1));
            let mut out = tls.outbox.lock().unwrap_or_else(|p| p.into_inner());
            {
                let mut conn = lock(&tls.conn);
                conn.send_close_notify();
                seal_into(&mut conn, &mut out)?;
            }
            send_all(&self.shared.socket, &mut out, Some(deadline))?;
        }
        self.shared.socket.shutdown(how)
    }

    /// Takes what it can of `data` without waiting (async's log stream): the bytes
    /// taken, 0 when the socket (or, under TLS, the records already encrypted) has no
    /// room. Under TLS the bytes taken may still wait as records inside the
    /// connection: [`Channel::try_flush`] sends them on.
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        let socket = &self.shared.socket;
        let Some(tls) = &self.shared.tls else {
            return match DontWait(socket).write(data) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
                other => other,
            };
        };
        let mut conn = lock(&tls.conn);
        if !flush_tls(&mut conn, socket)? {
            return Ok(0);
        }
        let n = conn.writer().write(data)?;
        flush_tls(&mut conn, socket)?;
        Ok(n)
    }

    /// Under TLS: sends records already encrypted, without waiting. True when nothing
    /// waits inside the connection (always, in clear).
    pub fn try_flush(&self) -> io::Result<bool> {
        match &self.shared.tls {
            None => Ok(true),
            Some(tls) => flush_tls(&mut lock(&tls.conn), &self.shared.socket),
        }
    }

    /// Waits up to `limit` for room in the socket. A poll error only shortens the wait:
    /// the next write reports it.
    pub fn wait_writable(&self, limit: Duration) {
        let _ = wait(&self.shared.socket, libc::POLLOUT, Some(Instant::now() + limit));
    }

    fn read_tls(&self, tls: &Tls, buf: &mut [u8]) -> io::Result<usize> {
        let socket = &self.shared.socket;
        let mut inbox = tls.inbox.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            {
                let mut conn = lock(&tls.conn);
                match conn.reader().read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // A peer that closed without close_notify: cut short like a TCP close. The
                    // framing above decides whether what arrived was whole.
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if inbox.start < inbox.end {
                    // rustls takes a record's worth at a time; the rest waits in the inbox.
                    let Inbox { buf: raw, start, end } = &mut *inbox;
                    let n = conn.read_tls(&mut &raw[*start..*end])?;
                    *start += n;
                    let processed = conn.process_new_packets();
                    // What processing queued (an alert, a key update's answer) goes with the
                    // next write; an alert now, if no writer is busy (the peer learns why).
                    if processed.is_err() {
                        if let Ok(mut out) = tls.outbox.try_lock() {
                            if seal_into(&mut conn, &mut out).is_ok() {
                                drop(conn);
                                let _ = send_all(socket, &mut out, Some(Instant::now() + Duration::from_millis(100)));
                            }
                        }
                    }
                    if let Err(e) = processed {
                        return Err(io::Error::new(ErrorKind::InvalidData, e));
                    }
                    continue;
                }
            }
            // Nothing to decrypt: wait for the peer in recv, holding only the inbox, so the
            // writer goes on meanwhile. The socket's read timeout applies, as in clear.
            let n = loop {
                match (&*socket).read(&mut inbox.buf) {
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if n == 0 {
                // The peer's FIN: rustls learns of it, and its reader says how the stream ended.
                let mut conn = lock(&tls.conn);
                conn.read_tls(&mut io::empty())?;
                continue;
            }
            inbox.start = 0;
            inbox.end = n;
        }
    }

    fn write_tls(&self, tls: &Tls, mut data: &[u8]) -> io::Result<()> {
        let socket = &self.shared.socket;
        let deadline = from_cell(self.shared.write_timeout.load(Ordering::SeqCst)).map(|t| Instant::now() + t);
        let mut out = tls.outbox.lock().unwrap_or_else(|p| p.into_inner());
        {
            // Sealed under the connection's lock, in memory; rustls takes up to its 64 KiB
            // buffer at a time, emptied into the outbox each turn.
            let mut conn = lock(&tls.conn);
            while !data.is_empty() {
                let n = conn.writer().write(data)?;
                seal_into(&mut conn, &mut out)?;
                if n == 0 {
                    return Err(io::Error::other("the TLS connection takes no more data (it is closing)"));
                }
                data = &data[n..];
            }
            // Anything a reader's processing queued goes along.
            seal_into(&mut conn, &mut out)?;
        }
        // Sent holding only the outbox: a reader decrypts meanwhile.
        send_all(socket, &mut out, deadline)
    }
}

fn lock(tls: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    tls.lock().unwrap_or_else(|p| p.into_inner())
}

impl Read for &Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.shared.tls {
            None => (&self.shared.socket).read(buf),
            Some(tls) => self.read_tls(tls, buf),
        }
    }
}

impl Write for &Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.shared.tls {
            None => (&self.shared.socket).write(buf),
            Some(tls) => self.write_tls(tls, buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Channel {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
