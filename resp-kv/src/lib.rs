//! `resp-kv`: the Redis-compatible key-value server that runs inside the ftvmm guest,
//! minus the networking.
//!
//! The guest owns one [`Store`] and one [`Conn`] per TCP connection. Whenever bytes
//! arrive it calls [`Conn::feed`], which parses RESP2 requests (arrays of bulk strings,
//! or inline `PING\r\n` lines), executes each complete one against the store and appends
//! Redis-formatted replies to an output buffer. Nothing here does I/O, reads a clock or
//! draws randomness: time comes in as `now_ms`, and all maps are ordered, so a replica
//! fed the same bytes at the same times ends in exactly the same state.
//!
//! Values are strings only: the string, counter, TTL and keyspace commands of Redis 7
//! (GET/SET with every option, INCRBYFLOAT, GETRANGE/SETRANGE, EXPIRE*/…TIME, RENAME,
//! COPY, KEYS/SCAN, OBJECT ENCODING...), transactions (MULTI/EXEC/WATCH), and the
//! server commands that `redis-cli`, `redis-benchmark` and client libraries send on
//! connect. Replies, errors and edge cases are Redis 7.0's, byte for byte; the
//! differences are listed in README ("Redis commands").
//!
//! Hostile input is expected: malformed protocol gets `-ERR Protocol error: ...` and
//! closes only that connection; requests are bounded by [`Limits`] before their bytes
//! are buffered; writes beyond the memory limit get `-OOM` and change nothing; no input
//! can make this crate panic (indexing, `unwrap` and unchecked arithmetic are denied
//! by lints outside tests).

#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

mod commands;
mod conn;
mod counter_cmds;
mod expire_cmds;
mod glob;
mod introspect_cmds;
mod key_cmds;
mod longdouble;
mod parse;
mod range_cmds;
mod reply;
mod scan_cmds;
mod server_cmds;
pub mod sites;
mod store;
mod string_cmds;
mod tx;

pub use conn::Conn;
pub use store::Store;

/// The largest value the server accepts by default: 4 MiB. The guest has 64 MiB of RAM;
/// a value passes through the connection's input buffer, its parsed argument and the
/// store (and a `GET` of it through an output buffer), so a few of these in flight
/// must fit next to the keyspace and the socket buffers.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;

/// Resource bounds; everything a client can make the server hold is capped by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single request, command and arguments included, in wire bytes.
    pub max_request_bytes: usize,
    /// Largest single argument, so the largest value a client can store (Redis'
    /// `proto-max-bulk-len`). A request announcing a longer one gets
    /// `-ERR Protocol error: invalid bulk length` and its connection is closed.
    pub max_bulk_bytes: usize,
    /// Most arguments (command name included) in one request.
    pub max_args: usize,
    /// Approximate keyspace size beyond which writes get `-OOM`.
    pub max_memory_bytes: usize,
    /// Per-connection buffering bound: reply bytes one `feed` call appends before it
    /// leaves the remaining requests as a backlog, and input a connection may keep
    /// queued while backlogged.
    pub max_conn_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: MAX_VALUE_BYTES + 64 * 1024,
            max_bulk_bytes: MAX_VALUE_BYTES,
            max_args: 1024,
            max_memory_bytes: 16 * 1024 * 1024,
            max_conn_buffer: 1024 * 1024,
        }
    }
}

/// Facts about the whole server that INFO and HELLO report; supplied by the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerInfo<'a> {
    /// Replication role, e.g. `"master"` or `"backup-live"`.
    pub role: &'a str,
    /// Whether a backup currently protects this server (`ftvmm_protected:yes|no`).
    pub protected: bool,
    pub uptime_ms: u64,
    pub connected_clients: usize,
    /// Most connections the server holds at once (INFO `maxclients`); 0: not shown.
    pub max_clients: usize,
    /// Appended verbatim to INFO's `# Clients` section: `name:value\r\n` lines.
    pub clients_extra: &'a str,
    /// Appended verbatim to INFO's `# Replication` section: `name:value\r\n` lines.
    pub extra: &'a str,
}

impl Default for ServerInfo<'_> {
    fn default() -> Self {
        ServerInfo {
            role: "master",
            protected: false,
            uptime_ms: 0,
            connected_clients: 1,
            max_clients: 0,
            clients_extra: "",
            extra: "",
        }
    }
}

/// What the guest should do with the connection after a [`Conn::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnStatus {
    /// Keep reading.
    Open,
    /// Send what is in `out`, then close the connection.
    Close,
}
