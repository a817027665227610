//! Primary/backup replication over TCP: the handshake, the primary's log
//! stream and ack reader, the backup's log reader and ack writer.
//!
//! ```text
//!   primary                                  backup
//!   vcpu0 --records--> log-tx ==TCP==> log-rx --records--> vcpu0 (replay)
//!   output <--wake-- ack-rx <==TCP== (acks, sent on receipt)
//! ```
//! One TCP connection carries both directions: records (and heartbeats, as
//! progress marks) down, acks up. Silence for the failover timeout on either
//! side means the peer is gone.
pub mod attach;
pub mod flow;
pub mod follower;
pub mod handshake;
pub mod pair;
pub mod release;
pub mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Defaults chosen by measurement; see README ("Choosing the timeouts"): the longest
/// silence seen under load is ~35 ms with a 20 ms heartbeat on a quiet host, but a
/// host with a load average of 6 on 2 cores showed stalls above 200 ms.
pub const DEFAULT_HEARTBEAT_MS: u64 = 20;
pub const DEFAULT_FAILOVER_TIMEOUT_MS: u64 = 500;

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub failover_timeout: Duration,
    /// Flow control: how many exits the backup's replay may trail (see [`flow`]).
    pub max_replay_lag: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot listen for a backup on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the primary at {addr} within {secs} s: {source}")]
    Connect {
        addr: String,
        secs: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the primary refused this backup: {0}")]
    Refused(String),
    #[error("this backup refused the primary: {0}")]
    RefusedPrimary(String),
    #[error("the pairing handshake failed: {0}")]
    Handshake(String),
    #[error("could not start thread {0}: {1}")]
    Thread(&'static str, std::io::Error),
}

/// A byte stream with a read timeout: the TCP connection between primary and
/// backup, or `logging_channel::pipe` in tests.
pub trait Link: std::io::Read + std::io::Write {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Link for &std::net::TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }
}

impl Link for logging_channel::pipe::PipeEnd {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        logging_channel::pipe::PipeEnd::set_read_timeout(self, timeout);
        Ok(())
    }
}

/// What the replication threads and the vCPU and output threads share.
#[derive(Debug, Default)]
pub struct PairState {
    /// A backup is in lockstep (primary), or the primary is (backup, before go-live).
    pub protected: AtomicBool,
    /// Primary: the backup's latest `received_through`.
    pub acked_through: AtomicU64,
    /// Primary: the backup's latest `replayed_through`. Backup: its own.
    pub replayed_through: AtomicU64,
    /// Backup: the primary's latest released mark (its output up to here has left it).
    pub released: AtomicU64,
    /// Backup: the log stream broke in a way that forbids going live (corruption).
    pub corrupt: AtomicBool,
    /// Backup: its own replay stopped making progress while records waited (the
    /// watchdog tripped); like corruption, this forbids going live.
    pub stalled: AtomicBool,
    /// Backup: the primary ended its log cleanly (SIGTERM), so the backup stops too.
    pub clean_end: AtomicBool,
    /// Primary: the decision to go on without this backup has been taken (once).
    pub deciding: AtomicBool,
    /// Primary: the arbiter gave this epoch to the backup; nothing held may leave.
    pub halted: AtomicBool,
}

impl PairState {
    /// A protected pairing whose backup starts from the VM state at exit `joined_at`
    /// (0 at boot): it holds and has replayed everything through that exit. Starting
    /// positions anywhere else would make flow control wait for exits that will
    /// never be sent (see [`flow`]).
    pub fn new_protected(joined_at: u64) -> Arc<PairState> {
        let s = PairState::default();
        s.protected.store(true, Ordering::SeqCst);
        s.acked_through.store(joined_at, Ordering::SeqCst);
        s.replayed_through.store(joined_at, Ordering::SeqCst);
        s.released.store(joined_at, Ordering::SeqCst);
        Arc::new(s)
    }
}
