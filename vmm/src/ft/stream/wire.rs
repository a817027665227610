//! One follower's socket and what waits to go out on it.
//!
//! ```text
//!   vCPU: records --> buf --(marks spliced at its front)--> send
//!   sync, semi-sync, quorum:  send = write_all(buf): the vCPU blocks while the
//!                             kernel's send buffer is full (the output waits for
//!                             this follower's ack anyway)
//!   async:                    send = buf --> out --> send(MSG_DONTWAIT) of what the
//!                             channel takes now; the rest stays in `out`, and
//!                             log-tx sends it when the socket is writable again
//! ```
//!
//! Async's promise is that the primary never waits for a follower: not for its ack,
//! and not for its network either. Before `out` existed an async primary whose
//! follower's link went quiet stalled its vCPU as soon as the kernel's send buffer
//! (tens of KiB) filled, so a dead link froze the guest for the write timeout. Now
//! what the kernel will not take waits in `out`, up to [`MAX_ASYNC_PENDING`]; past
//! that the follower is dropped (it resumes from the backlog when it is back).
//! Marks are spliced only into `buf`, whose front is always a frame boundary; `out`
//! may end in the middle of a frame the kernel took half of.
use crate::host::tls::Channel;
use std::io::Write;
use std::time::Instant;

/// How many bytes an async follower may have waiting for its socket before it is
/// dropped. At the ~1 MB/s that a busy guest logs, this is several seconds of a
/// follower that cannot keep up, much longer than the failover timeout in which a
/// silent one is dropped anyway; and the 64 MiB backlog holds more than this, so a
/// follower dropped for it can still resume rather than take a state transfer.
pub const MAX_ASYNC_PENDING: usize = 8 << 20;

/// A follower's socket and its buffers (see the module doc).
pub struct Wire {
    pub stream: Channel,
    /// Records appended since the last send; starts at a frame boundary.
    pub buf: Vec<u8>,
    /// Async only: bytes handed to this wire that the kernel has not taken yet.
    out: Vec<u8>,
    /// Async: never block the vCPU in a send.
    nonblocking: bool,
    /// Highest exit index appended (released marks aside): a heartbeat repeats it.
    pub highest: u64,
    /// The last released mark put in the stream.
    pub released_sent: u64,
    /// The standing (epoch, may take over) the follower was last told.
    pub standing_sent: Option<(u64, bool)>,
    pub last_write: Instant,
}

impl Wire {
    /// A wire on `stream` that starts with `buf` to send; `nonblocking` for async.
    pub fn new(
        stream: Channel,
        buf: Vec<u8>,
        highest: u64,
        standing_sent: Option<(u64, bool)>,
        nonblocking: bool,
    ) -> Wire {
        Wire {
            stream,
            buf,
            out: Vec::new(),
            nonblocking,
            highest,
            released_sent: 0,
            standing_sent,
            last_write: Instant::now(),
        }
    }

    /// Sends `buf` (see the module doc) and empties it. An error means the follower
    /// must be dropped: the socket failed, or an async follower fell more than
    /// [`MAX_ASYNC_PENDING`] behind.
    pub fn send(&mut self) -> std::io::Result<()> {
        self.last_write = Instant::now();
        if !self.nonblocking {
            let result = (&self.stream).write_all(&self.buf);
            self.buf.clear();
            return result;
        }
        if self.out.is_empty() {
            std::mem::swap(&mut self.out, &mut self.buf);
        } else {
            self.out.append(&mut self.buf);
        }
        self.send_pending()?;
        if self.out.len() > MAX_ASYNC_PENDING {
            return Err(std::io::Error::other(format!(
                "{} KiB of log wait for a socket that will not take them (more than the {} KiB an async \
                 follower may trail by); it resumes from the backlog when it keeps up again",
                self.out.len() >> 10,
                MAX_ASYNC_PENDING >> 10
            )));
        }
        Ok(())
    }

    /// Async: hands the channel as much of `out` as it takes without blocking (under
    /// TLS, records it encrypted earlier go first).
    pub fn send_pending(&mut self) -> std::io::Result<()> {
        let mut sent = 0;
        let result = loop {
            if sent == self.out.len() {
                break self.stream.try_flush().map(|_| ());
            }
            match self.stream.try_write(&self.out[sent..]) {
                Ok(0) => break Ok(()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if result.is_err() {
            self.out.clear();
        } else {
            self.out.drain(..sent);
        }
        result
    }

    /// Bytes waiting for the socket (async only); under TLS, at least 1 while
    /// encrypted records wait inside the channel.
    pub fn pending(&self) -> usize {
        match self.out.len() {
            0 if self.nonblocking => usize::from(!self.stream.try_flush().unwrap_or(true)),
            n => n,
        }
    }

    /// At a clean stop: everything waiting, then `buf`, blocking as long as the send
    /// timeout lets it.
    pub fn drain_all(&mut self) -> std::io::Result<()> {
        let result = (&self.stream).write_all(&self.out).and_then(|()| (&self.stream).write_all(&self.buf));
        self.out.clear();
        self.buf.clear();
        result
    }
}
