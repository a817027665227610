//! The fault-tolerance core: a primary, its followers, and the log between them.
//!
//! ```text
//!   primary                                              each follower
//!   vcpu0 --records--> GroupSink --> link 1 ==TCP==> log-rx --records--> vcpu0 (replay)
//!                               \--> link 2 ==TCP==> ...
//!   output <--poke-- ack-rx (one per link) <==TCP== acks, sent on receipt
//!            release_limit(mode, followers' acked positions)   (output_rule)
//! ```
//!
//! One TCP connection per follower carries both directions: records (and
//! heartbeats, as progress marks) down, acks up. Silence for the failover
//! timeout on either side means the peer is gone.
//!
//! The modules, each using only those above it in this list:
//! - [`output_rule`]: the Output Rule as a pure function of acknowledged positions;
//! - [`flow`]: flow control and its watchdog, pure;
//! - [`golive`]: how long a follower's go-live took, step by step (for its log), pure, and the
//!   catch-up's raised priority (its system calls in `host::sched`);
//! - [`handshake`]: pairing a follower with a primary;
//! - [`follower`]: a follower's `log-rx` and what it knows of its primary ([`follower::Upstream`]);
//! - [`backlog`]: the recent log a reconnecting follower resumes from, pure;
//! - [`catchup`]: a follower's catch-up progress (exits behind, rate), as log lines;
//! - [`disklog`]: a follower's log on its own disk (`--data-dir`), and reading it back;
//! - [`election`]: the replica group's election (votes, the witness, the peer port);
//! - [`group`]: **the one owner** of the epoch, the followers and their positions, and the arbiter;
//! - [`release`]: the output thread, holding output until the Output Rule lets it go;
//! - [`stream`]: the primary's log stream to each follower, and the vCPU's sink over all of them;
//! - [`attach`]: the one path by which a follower gets the VM's state and joins the stream,
//!   at boot or while the VM runs;
//! - [`takeover`]: a follower going live;
//! - [`member`]: what runs on the vCPU thread of a group member;
//! - [`recovery`]: a follower restarted on its data directory: restore, replay, rejoin;
//! - [`start`]: setting up a primary or a follower before the guest boots;
//! - `sabotage`: a test-only broken Output Rule for the fault campaign (debug builds only).
pub mod attach;
pub mod backlog;
pub mod catchup;
pub mod disklog;
pub mod election;
pub mod flow;
pub mod follower;
pub mod golive;
pub mod group;
pub mod handshake;
pub mod member;
pub mod output_rule;
pub mod recovery;
pub mod release;
mod sabotage;
pub mod start;
pub mod stream;
pub mod takeover;

use std::time::Duration;

/// Defaults chosen by measurement; see README ("Choosing the timeouts"): the longest
/// silence seen under load is ~35 ms with a 20 ms heartbeat on a quiet host, but a
/// host with a load average of 6 on 2 cores showed stalls above 200 ms.
pub const DEFAULT_HEARTBEAT_MS: u64 = 20;
/// See [`DEFAULT_HEARTBEAT_MS`].
pub const DEFAULT_FAILOVER_TIMEOUT_MS: u64 = 500;

/// The default `--reconnect-secs`: off. A follower that waits to reconnect delays its
/// failover by that long whenever the primary's host is really gone (an unreachable
/// host refuses nothing, so only the deadline ends the wait), and failover time is
/// what this VMM exists to keep short. Operators who prefer a resume to a failover
/// when links flap opt in (docs/replication.md, "Backlog and resume").
pub const DEFAULT_RECONNECT_SECS: u64 = 0;

/// The clocks and budgets of replication.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a primary with nothing to send says it is alive.
    pub heartbeat: Duration,
    /// Silence this long means the peer is gone.
    pub failover_timeout: Duration,
    /// Flow control: how many exits a follower's replay may trail (see [`flow`]).
    pub max_replay_lag: u64,
    /// A primary keeps this many bytes of its recent log for followers that reconnect.
    pub backlog_bytes: usize,
    /// How long a follower whose connection broke tries to reconnect and resume before
    /// it takes its primary for dead (zero: it does not try).
    pub reconnect: Duration,
    /// A state transfer to a running VM copies memory while it runs, pausing it only
    /// for the last round (`--precopy on`, the default); off, it stops for the whole copy.
    pub precopy: bool,
}

/// Why replication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot listen for followers on {addr}: {source}")]
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
    #[error("the primary refused this follower: {0}")]
    Refused(String),
    #[error("this follower refused the primary: {0}")]
    RefusedPrimary(String),
    #[error("the pairing handshake failed: {0}")]
    Handshake(String),
    #[error("could not start thread {0}: {1}")]
    Thread(&'static str, std::io::Error),
    #[error("{0}")]
    Attach(String),
    #[error("refusing to start: {0}")]
    Stale(String),
    #[error("{0}")]
    Tls(#[from] crate::host::tls::TlsError),
    #[error("state transfer failed: {0}")]
    Snapshot(#[from] crate::vm::snapshot::SnapshotError),
}

/// A byte stream with a read timeout that can be closed: the connection ([`Channel`](crate::host::tls::Channel), TLS or clear)
/// between a primary and a follower, or `logging_channel::pipe` in tests.
pub trait Link: std::io::Read + std::io::Write {
    /// Reads wait at most this long (`None`: forever).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()>;
    /// Ends the connection in both directions; the peer sees it closed.
    fn close(&mut self);
}

impl Link for crate::host::tls::Channel {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        crate::host::tls::Channel::set_read_timeout(self, timeout)
    }

    fn close(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Link for logging_channel::pipe::PipeEnd {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        logging_channel::pipe::PipeEnd::set_read_timeout(self, timeout);
        Ok(())
    }

    fn close(&mut self) {
        self.shutdown_write();
    }
}
