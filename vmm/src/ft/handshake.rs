//! Pairing. The primary sends its `Hello`; the backup checks it against its own
//! machine and answers with its verdict and (if it accepts) its own `Hello`;
//! the primary answers with its verdict: it refuses a second backup while it
//! has one (busy), and a peer that is not a backup of the same machine.
//!
//! ```text
//!   primary                      backup
//!     | -- Hello(primary) ----------> |  checks version, roles, machine, epoch
//!     | <-- HelloReply, Hello(backup) |
//!     | -- HelloReply --------------> |
//!     | <-- Attach(Fresh | Resume) -- |  what the backup needs
//!     | -- AttachReply -------------> |  at the primary's next exit: resume or state
//! ```
//! (the messages are drawn in full in `logging_channel::channel`). All of it runs
//! inside the connection's TLS (unless `--insecure`): the primary says hello only
//! to a peer whose certificate the group's CA signed.
use super::ReplicationError;
use crate::host::scope::Scope;
use crate::host::tls::{self, Channel, Security};
use logging_channel::channel::{
    self, AttachReply, AttachRequest, Hello, HelloReply, Message, MessageReader, RefuseCode,
};
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The primary answers an attach request at its vCPU's next exit, after any attach
/// before it (a state transfer takes a fraction of a second).
const ATTACH_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn send(stream: &Channel, message: &Message) -> std::io::Result<()> {
    let mut buf = Vec::new();
    channel::encode(message, &mut buf);
    (&*stream).write_all(&buf)
}

fn receive(stream: &Channel) -> Result<Message, ReplicationError> {
    receive_within(stream, HANDSHAKE_TIMEOUT)
}

fn receive_within(stream: &Channel, timeout: Duration) -> Result<Message, ReplicationError> {
    let fail = |e: String| ReplicationError::Handshake(e);
    stream.set_read_timeout(Some(timeout)).map_err(|e| fail(e.to_string()))?;
    let mut reader = MessageReader::new(stream);
    let msg = reader.next_message().map_err(|e| fail(e.to_string()))?;
    stream.set_read_timeout(None).map_err(|e| fail(e.to_string()))?;
    msg.ok_or_else(|| fail("the peer closed the connection during the handshake".into()))
}

pub fn listen(addr: &str) -> Result<TcpListener, ReplicationError> {
    crate::host::bind::listen(addr, crate::host::bind::ADDR_IN_USE_GRACE)
        .map_err(|source| ReplicationError::Listen { addr: addr.to_string(), source })
}

/// Pending joins (TLS handshake and pairing) at once; more are closed at once.
pub const MAX_PENDING_JOINS: usize = 16;

/// Who a join port pairs with: what it tells a backup, and when it turns one away.
pub trait JoinPolicy: Send + Sync + 'static {
    /// This primary's hello now.
    fn local(&self) -> Hello;
    /// Why the group takes no follower now, if it takes none.
    fn refusal(&self) -> Option<String>;
    /// A backup paired: hand it on (to the vCPU). False when nobody takes it any more
    /// (the VM stopped): the listener ends.
    fn paired(&self, conn: Channel, request: AttachRequest) -> bool;
}

/// Serves `listener` on the `join-listen` thread until `policy` takes no more: each
/// connection is paired on its own `join-pair` thread (TLS handshake within
/// [`tls::HANDSHAKE_TIMEOUT`], then hellos), at most [`MAX_PENDING_JOINS`] at once,
/// so a peer that connects and sends nothing, or sends slowly, delays no real
/// follower's join.
pub fn serve_joins(listener: TcpListener, security: Security, policy: Arc<dyn JoinPolicy>) -> std::io::Result<()> {
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::Builder::new().name("join-listen".into()).spawn(move || {
        use std::sync::atomic::Ordering;
        while !done.load(Ordering::SeqCst) {
            let (socket, peer) = match listener.accept() {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accepting a backup failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_JOINS {
                pending.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, "join: {MAX_PENDING_JOINS} joins already pending; closed this one");
                continue;
            }
            let (security, policy, pending, done) = (security.clone(), policy.clone(), pending.clone(), done.clone());
            let spawned = std::thread::Builder::new().name("join-pair".into()).spawn(move || {
                let paired = security
                    .server(socket, tls::HANDSHAKE_TIMEOUT)
                    .map_err(ReplicationError::from)
                    .and_then(|conn| pair_with(conn, &policy.local(), policy.refusal()));
                // Done pairing: the next connection may take this one's place.
                pending.fetch_sub(1, Ordering::SeqCst);
                match paired {
                    Ok((conn, request)) => {
                        tracing::info!(%peer, "backup paired");
                        if !policy.paired(conn, request) {
                            done.store(true, Ordering::SeqCst);
                        }
                    }
                    Err(e) => tracing::warn!(%peer, "did not pair: {e}"),
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(%peer, "join: cannot start a thread: {e}");
            }
        }
    })?;
    Ok(())
}

fn pair_with(
    stream: Channel,
    local: &Hello,
    refusal: Option<String>,
) -> Result<(Channel, AttachRequest), ReplicationError> {
    let io = |e: std::io::Error| ReplicationError::Handshake(e.to_string());
    send(&stream, &Message::Hello(*local)).map_err(io)?;
    match receive(&stream)? {
        Message::HelloReply(HelloReply::Accept) => {}
        Message::HelloReply(HelloReply::Refuse { reason, .. }) => {
            return Err(ReplicationError::Handshake(format!("the backup refused this primary: {reason}")))
        }
        other => return Err(ReplicationError::Handshake(format!("expected a reply, got {other:?}"))),
    }
    let Message::Hello(peer) = receive(&stream)? else {
        return Err(ReplicationError::Handshake("the backup did not introduce itself".into()));
    };
    let verdict = verdict_on_backup(&peer, local, refusal);
    send(&stream, &Message::HelloReply(verdict.clone())).map_err(io)?;
    if let HelloReply::Refuse { reason, .. } = verdict {
        return Err(ReplicationError::Handshake(format!("refused the backup: {reason}")));
    }
    match receive(&stream)? {
        Message::Attach(request) => Ok((stream, request)),
        other => Err(ReplicationError::Handshake(format!("expected the backup's attach request, got {other:?}"))),
    }
}

/// Tells a paired backup why it is turned away at attach time (best effort: it is
/// going anyway).
pub fn refuse_attach(stream: &mut Channel, why: &str) {
    let _ = send(stream, &Message::AttachReply(AttachReply::Refuse { why: why.to_string() }));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Answers a backup's attach request; what the answer announces follows on `stream`.
pub fn reply_attach(stream: &mut Channel, reply: AttachReply) -> Result<(), ReplicationError> {
    send(stream, &Message::AttachReply(reply)).map_err(|e| ReplicationError::Handshake(e.to_string()))
}

/// A follower joins with no state of its own, so its epoch does not matter; it must
/// be a follower of the very same machine, and the group must have room for it
/// (`refusal` says why not).
fn verdict_on_backup(peer: &Hello, local: &Hello, refusal: Option<String>) -> HelloReply {
    if let Some(reason) = refusal {
        return HelloReply::Refuse { code: RefuseCode::Busy, reason };
    }
    let as_if_same_epoch = Hello { epoch: local.epoch, ..*peer };
    as_if_same_epoch.evaluate(local)
}

/// How a backup treats a primary that refuses connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefused {
    /// Keep trying until the deadline: at start, the primary may not be up yet.
    Retry,
    /// Give up at once: reconnecting, a refused connection means the primary's process
    /// is gone while its host is up, and waiting would only delay the failover.
    GiveUp,
}

/// Connects to the primary (retrying until `within` has passed), runs the TLS
/// handshake, checks its `Hello`, answers, asks for `request`, and returns the
/// primary's answer; what the answer announces follows on the stream. The follower
/// takes the primary's group name into `scope` (the group's first primary made it up).
pub fn connect_primary(
    addr: &str,
    local: &Hello,
    within: Duration,
    request: AttachRequest,
    on_refused: OnRefused,
    scope: &Scope,
    security: &Security,
) -> Result<(Channel, AttachReply), ReplicationError> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match try_pair(addr, local, left, request, on_refused, scope, security) {
            // A connection that closes before the primary's hello (a relay whose primary is
            // not up yet, a primary restarting) is worth another try; refusals are final.
            Err(ReplicationError::Handshake(why)) if Instant::now() < deadline => {
                tracing::debug!("pairing attempt failed ({why}); retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            // A TLS failure is worth another try too (a primary restarting mid-handshake),
            // but it is said at once: a certificate of another group never gets better.
            Err(ReplicationError::Tls(why)) if Instant::now() < deadline => {
                tracing::warn!("pairing attempt failed: {why}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

fn try_pair(
    addr: &str,
    local: &Hello,
    within: Duration,
    request: AttachRequest,
    on_refused: OnRefused,
    scope: &Scope,
    security: &Security,
) -> Result<(Channel, AttachReply), ReplicationError> {
    let socket = connect_retrying(addr, within, on_refused)?;
    let stream = security.client(socket, tls::HANDSHAKE_TIMEOUT)?;
    let primary = match receive(&stream)? {
        Message::Hello(h) => h,
        other => return Err(ReplicationError::Handshake(format!("expected the primary's hello, got {other:?}"))),
    };
    let reply = primary.evaluate(local);
    let io = |e: std::io::Error| ReplicationError::Handshake(e.to_string());
    send(&stream, &Message::HelloReply(reply.clone())).map_err(io)?;
    if let HelloReply::Refuse { reason, .. } = reply {
        return Err(ReplicationError::RefusedPrimary(reason));
    }
    send(&stream, &Message::Hello(*local)).map_err(io)?;
    match receive(&stream)? {
        Message::HelloReply(HelloReply::Accept) => {}
        // A reconnecting follower can be back before its primary has noticed the old
        // connection is dead (both wait the failover timeout): the group still counts it
        // and may be full. That passes; try again until the deadline.
        Message::HelloReply(HelloReply::Refuse { code: RefuseCode::Busy, reason })
            if on_refused == OnRefused::GiveUp =>
        {
            return Err(ReplicationError::Handshake(format!("the primary is busy ({reason})")))
        }
        Message::HelloReply(HelloReply::Refuse { reason, .. }) => return Err(ReplicationError::Refused(reason)),
        other => return Err(ReplicationError::Handshake(format!("expected the primary's verdict, got {other:?}"))),
    }
    // Not fatal: unstored, a restarted replica member knows no name and does not ask the
    // witness until it joins a primary again (which is safe).
    if let Err(e) = scope.adopt(primary.group) {
        tracing::error!("{e}");
    }
    send(&stream, &Message::Attach(request)).map_err(io)?;
    match receive_within(&stream, ATTACH_REPLY_TIMEOUT)? {
        Message::AttachReply(AttachReply::Refuse { why }) => Err(ReplicationError::Refused(why)),
        Message::AttachReply(reply) => Ok((stream, reply)),
        other => Err(ReplicationError::Handshake(format!("expected the primary's attach reply, got {other:?}"))),
    }
}

fn connect_retrying(addr: &str, within: Duration, on_refused: OnRefused) -> Result<TcpStream, ReplicationError> {
    let deadline = Instant::now() + within;
    let secs = within.as_secs();
    loop {
        let attempt = addr.to_socket_addrs().and_then(|mut addrs| {
            let a = addrs.next().ok_or_else(|| std::io::Error::other("address resolves to nothing"))?;
            TcpStream::connect_timeout(&a, Duration::from_secs(1))
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(source)
                if Instant::now() >= deadline
                    || (on_refused == OnRefused::GiveUp && source.kind() == std::io::ErrorKind::ConnectionRefused) =>
            {
                return Err(ReplicationError::Connect { addr: addr.to_string(), secs, source })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tls::tests::group;
    use logging_channel::channel::{hello, Role};
    use logging_channel::LogHeader;
    use std::io::Read;
    use std::sync::Mutex;

    fn machine() -> LogHeader {
        LogHeader { guest_image_digest: [3; 32], mem_size: 64 << 20, cpuid_digest: [4; 32], tick_hz: 250 }
    }

    /// A join port that answers every paired backup with a state reply, and counts them.
    struct Answering(Mutex<usize>);

    impl JoinPolicy for Answering {
        fn local(&self) -> Hello {
            hello(Role::Primary, &machine(), 1, logging_channel::GroupName::new("g").expect("name"))
        }
        fn refusal(&self) -> Option<String> {
            None
        }
        fn paired(&self, mut conn: Channel, _: AttachRequest) -> bool {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            reply_attach(&mut conn, AttachReply::State { why: String::new() }).is_ok()
        }
    }

    #[test]
    fn silent_peers_at_the_join_port_delay_no_real_backup_and_past_the_limit_are_closed_at_once() {
        let (_certs, ids) = group(2);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let policy = Arc::new(Answering(Mutex::new(0)));
        serve_joins(listener, ids[0].clone(), policy.clone()).expect("serve");
        // One short of the limit: silent, each holding a pairing thread until the deadline.
        let silent: Vec<TcpStream> =
            (0..MAX_PENDING_JOINS - 1).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
        std::thread::sleep(Duration::from_millis(100));
        let backup = hello(Role::Backup, &machine(), 0, logging_channel::GroupName::new("g").expect("name"));
        let scope = Scope::unknown();
        // A member of the group pairing as a fresh backup.
        let pair = || {
            connect_primary(
                &addr,
                &backup,
                Duration::from_secs(5),
                AttachRequest::Fresh,
                OnRefused::GiveUp,
                &scope,
                &ids[1],
            )
        };
        let t0 = Instant::now();
        let (_conn, reply) = pair().expect("a member pairs");
        let took = t0.elapsed();
        assert!(matches!(reply, AttachReply::State { .. }));
        assert!(took < tls::HANDSHAKE_TIMEOUT / 2, "the member waited {took:?} behind silent peers");
        assert_eq!(*policy.0.lock().expect("count"), 1);
        // At the limit, one more connection is closed at once, not left hanging.
        std::thread::sleep(Duration::from_millis(100));
        let mut last = silent;
        last.push(TcpStream::connect(&addr).expect("connect"));
        std::thread::sleep(Duration::from_millis(100));
        let mut extra = TcpStream::connect(&addr).expect("connect");
        extra.set_read_timeout(Some(tls::HANDSHAKE_TIMEOUT * 2)).expect("timeout");
        let t0 = Instant::now();
        assert!(matches!(extra.read(&mut [0u8; 8]), Ok(0) | Err(_)));
        assert!(t0.elapsed() < tls::HANDSHAKE_TIMEOUT / 2, "closed after {:?}", t0.elapsed());
        // Past the deadline the silent ones are gone and members pair again.
        std::thread::sleep(tls::HANDSHAKE_TIMEOUT + Duration::from_millis(300));
        pair().expect("a member pairs after the silent peers timed out");
        drop(last);
    }
}
