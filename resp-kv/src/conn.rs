//! Per-connection request buffering and the command loop.

use alloc::vec::Vec;
use core::mem;

use crate::commands::{execute, ClientState, Ctx};
use crate::parse::{parse, Parsed};
use crate::{reply, ConnStatus, ServerInfo, Store};

/// Idle connections keep at most this much buffer capacity.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Per-TCP-connection state: buffered partial request, client name/id, closed flag.
/// Keeping this per connection means a hostile client only ever breaks its own stream.
#[derive(Debug, Default, Clone)]
pub struct Conn {
    /// Received bytes not yet executed: a partial request, or a backlog (see `feed`).
    pending: Vec<u8>,
    /// The parser needs at least this many pending bytes before a retry can succeed.
    need: usize,
    /// Complete requests were left unexecuted because this feed's output hit its cap.
    backlog: bool,
    closed: bool,
    client: ClientState,
}

/// One feed's fixed inputs, bundled to keep signatures short.
struct Env<'a, 'i> {
    store: &'a mut Store,
    now_ms: u64,
    info: &'a ServerInfo<'i>,
    out: &'a mut Vec<u8>,
    /// `out.len()` when the feed started.
    out_start: usize,
}

impl Conn {
    /// A fresh connection with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consume bytes received on the connection, execute every complete command in
    /// order (pipelining) and append the replies to `out`. A partial request stays
    /// buffered for the next call.
    ///
    /// Output is bounded per call: once this call has appended `max_conn_buffer` bytes,
    /// further complete requests stay buffered and [`Conn::has_backlog`] turns true. The
    /// caller should then send `out`, stop reading the socket, and call `feed(&[], ..)`
    /// until the backlog is gone. Feeding more input while backlogged beyond
    /// `max_conn_buffer` pending bytes closes the connection.
    ///
    /// Returns [`ConnStatus::Close`] after QUIT (its `+OK` written) or after a protocol
    /// error reply; every later call does nothing and returns `Close` again.
    pub fn feed(
        &mut self,
        input: &[u8],
        store: &mut Store,
        now_ms: u64,
        info: &ServerInfo,
        out: &mut Vec<u8>,
    ) -> ConnStatus {
        if self.closed {
            return ConnStatus::Close;
        }
        let ignored_backlog = self.backlog && !input.is_empty();
        let out_start = out.len();
        let mut env = Env { store, now_ms, info, out, out_start };
        if self.pending.is_empty() {
            // Common case: parse straight from the input, copy only the leftover.
            self.need = 0;
            let consumed = self.run(input, &mut env);
            if !self.closed {
                self.buffer(input.get(consumed..).unwrap_or(&[]), env.out);
            }
        } else {
            if !self.buffer(input, env.out) {
                self.pending = Vec::new();
                return ConnStatus::Close;
            }
            let pending = mem::take(&mut self.pending);
            let consumed = self.run(&pending, &mut env);
            self.pending = pending;
            self.pending.drain(..consumed.min(self.pending.len()));
        }
        let limit = env.store.limits().max_conn_buffer;
        if !self.closed && ignored_backlog && self.pending.len() > limit {
            reply::error(env.out, b"ERR Protocol error: client query buffer overflow");
            self.closed = true;
        }
        if self.closed || (self.pending.is_empty() && self.pending.capacity() > KEEP_CAPACITY) {
            // Do not let one large request pin its buffer for the connection's lifetime.
            self.pending = Vec::new();
        }
        if self.closed {
            return ConnStatus::Close;
        }
        ConnStatus::Open
    }

    /// True when complete requests are buffered but were not executed because the last
    /// call's output reached `max_conn_buffer`; call `feed(&[], ..)` after sending `out`.
    pub fn has_backlog(&self) -> bool {
        self.backlog
    }

    /// Bytes received but not yet executed.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Heap bytes this connection holds: its input buffer (at least
    /// [`Conn::pending_bytes`]) plus its MULTI queue and WATCHed keys.
    pub fn buffer_capacity(&self) -> usize {
        self.pending.capacity().saturating_add(self.client.tx.bytes())
    }

    /// The connection is going away: drop its WATCH registrations from the store (other
    /// connections' writes would otherwise keep flagging a connection that is gone) and
    /// leave it as a fresh connection. The guest calls this whenever it closes or
    /// replaces a connection.
    pub fn release(&mut self, store: &mut Store) {
        let id = self.client.id;
        self.client.tx.unwatch_all(id, store);
        *self = Conn::new();
    }

    /// Append `bytes` to `pending`. The buffer grows at most to what the request being
    /// read needs (`need`, already checked against `max_request_bytes`), not to the
    /// next power of two, and only as bytes arrive; when even that cannot be allocated
    /// the client gets `-OOM` and the connection closes (false) instead of the guest
    /// failing.
    fn buffer(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        let len = self.pending.len();
        let required = len.saturating_add(bytes.len());
        if required > self.pending.capacity() {
            let doubled = self.pending.capacity().saturating_mul(2).max(KEEP_CAPACITY);
            let target = required.max(doubled.min(self.need));
            if self.pending.try_reserve_exact(target.saturating_sub(len)).is_err() {
                reply::error(out, b"OOM not enough free memory to buffer this request; retry, or send smaller values");
                self.closed = true;
                return false;
            }
        }
        self.pending.extend_from_slice(bytes);
        true
    }

    /// Execute complete requests from `bytes`; returns how many bytes were used up.
    fn run(&mut self, bytes: &[u8], env: &mut Env) -> usize {
        let out_cap = env.store.limits().max_conn_buffer;
        let mut pos = 0usize;
        self.backlog = false;
        loop {
            let rest = bytes.get(pos..).unwrap_or(&[]);
            if rest.is_empty() || rest.len() < self.need {
                return pos;
            }
            // Checked only once something ran, so every call makes progress even
            // with a tiny (or zero) cap.
            let produced = env.out.len().saturating_sub(env.out_start);
            if pos > 0 && produced >= out_cap {
                self.backlog = true;
                return pos;
            }
            match parse(rest, env.store.limits()) {
                Parsed::Command { mut args, consumed } => {
                    pos = pos.saturating_add(consumed);
                    self.need = 0;
                    if self.execute(&mut args, env) {
                        return pos;
                    }
                }
                Parsed::Nothing { consumed } => {
                    pos = pos.saturating_add(consumed);
                    self.need = 0;
                }
                Parsed::Incomplete { need } => {
                    self.need = need;
                    return pos;
                }
                Parsed::Error(text) => {
                    reply::error(env.out, &text);
                    self.closed = true;
                    return pos;
                }
            }
        }
    }

    /// Run one command; true when the connection must close (QUIT).
    fn execute(&mut self, args: &mut [Vec<u8>], env: &mut Env) -> bool {
        let mut ctx = Ctx {
            store: env.store,
            now_ms: env.now_ms,
            info: env.info,
            out: env.out,
            client: &mut self.client,
            close: false,
        };
        execute(&mut ctx, args);
        self.closed = ctx.close;
        ctx.close
    }
}
