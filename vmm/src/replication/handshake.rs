//! Pairing: the primary sends its `Hello`, the backup checks it against its own
//! machine and answers. A mismatch in protocol, roles, guest image, memory,
//! CPUID, tick rate or a stale epoch refuses the pair.
use super::ReplicationError;
use logging_channel::channel::{self, Hello, HelloReply, Message, MessageReader};
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn send(stream: &mut TcpStream, message: &Message) -> std::io::Result<()> {
    let mut buf = Vec::new();
    channel::encode(message, &mut buf);
    stream.write_all(&buf)
}

fn receive(stream: &TcpStream) -> Result<Message, ReplicationError> {
    let fail = |e: String| ReplicationError::Handshake(e);
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(|e| fail(e.to_string()))?;
    let mut reader = MessageReader::new(stream);
    let msg = reader.next_message().map_err(|e| fail(e.to_string()))?;
    stream.set_read_timeout(None).map_err(|e| fail(e.to_string()))?;
    msg.ok_or_else(|| fail("the peer closed the connection during the handshake".into()))
}

pub fn listen(addr: &str) -> Result<TcpListener, ReplicationError> {
    TcpListener::bind(addr).map_err(|source| ReplicationError::Listen { addr: addr.to_string(), source })
}

/// Waits for a backup that accepts this primary's `Hello`; refused ones are logged and dropped.
pub fn accept_backup(listener: &TcpListener, local: &Hello) -> Result<TcpStream, ReplicationError> {
    loop {
        let (mut stream, peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accepting a backup failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let attempt = send(&mut stream, &Message::Hello(*local))
            .map_err(|e| ReplicationError::Handshake(e.to_string()))
            .and_then(|()| receive(&stream));
        match attempt {
            Ok(Message::HelloReply(HelloReply::Accept)) => {
                tracing::info!(%peer, "backup paired");
                return Ok(stream);
            }
            Ok(Message::HelloReply(HelloReply::Refuse { code, reason })) => {
                tracing::warn!(%peer, ?code, "backup refused to pair: {reason}")
            }
            Ok(other) => tracing::warn!(%peer, "backup sent {other:?} instead of a reply"),
            Err(e) => tracing::warn!(%peer, "handshake with a backup failed: {e}"),
        }
    }
}

/// Connects to the primary (retrying until `within` has passed), checks its `Hello`, answers.
pub fn connect_primary(addr: &str, local: &Hello, within: Duration) -> Result<TcpStream, ReplicationError> {
    let mut stream = connect_retrying(addr, within)?;
    let _ = stream.set_nodelay(true);
    let primary = match receive(&stream)? {
        Message::Hello(h) => h,
        other => return Err(ReplicationError::Handshake(format!("expected the primary's hello, got {other:?}"))),
    };
    let reply = primary.evaluate(local);
    send(&mut stream, &Message::HelloReply(reply.clone())).map_err(|e| ReplicationError::Handshake(e.to_string()))?;
    match reply {
        HelloReply::Accept => Ok(stream),
        HelloReply::Refuse { reason, .. } => Err(ReplicationError::RefusedPrimary(reason)),
    }
}

fn connect_retrying(addr: &str, within: Duration) -> Result<TcpStream, ReplicationError> {
    let deadline = Instant::now() + within;
    let secs = within.as_secs();
    loop {
        let attempt = addr.to_socket_addrs().and_then(|mut addrs| {
            let a = addrs.next().ok_or_else(|| std::io::Error::other("address resolves to nothing"))?;
            TcpStream::connect_timeout(&a, Duration::from_secs(1))
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(source) if Instant::now() >= deadline => {
                return Err(ReplicationError::Connect { addr: addr.to_string(), secs, source })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
