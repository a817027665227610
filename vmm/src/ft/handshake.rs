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
//! (the messages are drawn in full in `logging_channel::channel`).
use super::ReplicationError;
use crate::host::scope::Scope;
use logging_channel::channel::{
    self, AttachReply, AttachRequest, Hello, HelloReply, Message, MessageReader, RefuseCode,
};
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The primary answers an attach request at its vCPU's next exit, after any attach
/// before it (a state transfer takes a fraction of a second).
const ATTACH_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn send(stream: &mut TcpStream, message: &Message) -> std::io::Result<()> {
    let mut buf = Vec::new();
    channel::encode(message, &mut buf);
    stream.write_all(&buf)
}

fn receive(stream: &TcpStream) -> Result<Message, ReplicationError> {
    receive_within(stream, HANDSHAKE_TIMEOUT)
}

fn receive_within(stream: &TcpStream, timeout: Duration) -> Result<Message, ReplicationError> {
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

/// Waits for a backup that accepts this primary's `Hello` and that `refuse` does not
/// turn away; refused ones are logged and dropped. Returns it with what it asks for.
pub fn accept_backup(
    listener: &TcpListener,
    local: &dyn Fn() -> Hello,
    refuse: &dyn Fn() -> Option<String>,
) -> Result<(TcpStream, AttachRequest), ReplicationError> {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accepting a backup failed: {e}");
                continue;
            }
        };
        match pair_with(stream, &local(), refuse()) {
            Ok(stream) => {
                tracing::info!(%peer, "backup paired");
                return Ok(stream);
            }
            Err(e) => tracing::warn!(%peer, "did not pair: {e}"),
        }
    }
}

fn pair_with(
    mut stream: TcpStream,
    local: &Hello,
    refusal: Option<String>,
) -> Result<(TcpStream, AttachRequest), ReplicationError> {
    let _ = stream.set_nodelay(true);
    let io = |e: std::io::Error| ReplicationError::Handshake(e.to_string());
    send(&mut stream, &Message::Hello(*local)).map_err(io)?;
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
    send(&mut stream, &Message::HelloReply(verdict.clone())).map_err(io)?;
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
pub fn refuse_attach(stream: &mut TcpStream, why: &str) {
    let _ = send(stream, &Message::AttachReply(AttachReply::Refuse { why: why.to_string() }));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Answers a backup's attach request; what the answer announces follows on `stream`.
pub fn reply_attach(stream: &mut TcpStream, reply: AttachReply) -> Result<(), ReplicationError> {
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

/// Connects to the primary (retrying until `within` has passed), checks its `Hello`,
/// answers, asks for `request`, and returns the primary's answer; what the answer
/// announces follows on the stream. The follower takes the primary's group name
/// into `scope` (the group's first primary made it up).
pub fn connect_primary(
    addr: &str,
    local: &Hello,
    within: Duration,
    request: AttachRequest,
    on_refused: OnRefused,
    scope: &Scope,
) -> Result<(TcpStream, AttachReply), ReplicationError> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match try_pair(addr, local, left, request, on_refused, scope) {
            // A connection that closes before the primary's hello (a relay whose primary is
            // not up yet, a primary restarting) is worth another try; refusals are final.
            Err(ReplicationError::Handshake(why)) if Instant::now() < deadline => {
                tracing::debug!("pairing attempt failed ({why}); retrying");
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
) -> Result<(TcpStream, AttachReply), ReplicationError> {
    let mut stream = connect_retrying(addr, within, on_refused)?;
    let _ = stream.set_nodelay(true);
    let primary = match receive(&stream)? {
        Message::Hello(h) => h,
        other => return Err(ReplicationError::Handshake(format!("expected the primary's hello, got {other:?}"))),
    };
    let reply = primary.evaluate(local);
    let io = |e: std::io::Error| ReplicationError::Handshake(e.to_string());
    send(&mut stream, &Message::HelloReply(reply.clone())).map_err(io)?;
    if let HelloReply::Refuse { reason, .. } = reply {
        return Err(ReplicationError::RefusedPrimary(reason));
    }
    send(&mut stream, &Message::Hello(*local)).map_err(io)?;
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
    send(&mut stream, &Message::Attach(request)).map_err(io)?;
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
