//! Transactions: MULTI / EXEC / DISCARD and optimistic locking with WATCH / UNWATCH,
//! per connection, with Redis 7's replies and rules:
//!
//! - inside MULTI every command but EXEC, DISCARD, MULTI, WATCH and QUIT is checked
//!   (unknown command, arity, subcommand) and queued (`+QUEUED`); a command that fails
//!   those checks gets its error and makes EXEC answer `-EXECABORT`;
//! - EXEC answers `*-1` (nothing runs) when a WATCHed key changed since WATCH: written
//!   or deleted by any connection, flushed, or expired (the store flags watchers on
//!   every change; see `store/watch.rs`);
//! - the queue and the watched keys a connection holds are bounded together by
//!   `Limits::max_request_bytes` (Redis bounds them only by memory); past that, the
//!   command gets an error and the transaction is aborted at EXEC.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::mem;

use crate::commands::{run, Ctx};
use crate::{reply, Store};

/// Per-connection bookkeeping charged for each queued command and argument, besides
/// their bytes (vector headers).
const QUEUED_OVERHEAD: usize = 24;

/// A connection's transaction state.
#[derive(Debug, Default, Clone)]
pub(crate) struct TxState {
    /// Between MULTI and EXEC/DISCARD.
    multi: bool,
    /// A command failed its checks while queueing (Redis' `CLIENT_DIRTY_EXEC`).
    aborted: bool,
    queue: Vec<Vec<Vec<u8>>>,
    watched: BTreeSet<Vec<u8>>,
    /// Bytes held by `queue` and `watched`, as charged against the limit.
    bytes: usize,
}

impl TxState {
    pub(crate) fn in_multi(&self) -> bool {
        self.multi
    }

    /// Heap bytes this connection holds for its transaction.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn end_multi(&mut self) {
        self.multi = false;
        self.aborted = false;
        let queued: usize = self.queue.iter().map(|args| cost(args)).sum();
        self.bytes = self.bytes.saturating_sub(queued);
        self.queue = Vec::new();
    }

    /// Forget every watched key (here and in the store's registry).
    pub(crate) fn unwatch_all(&mut self, client: Option<u64>, store: &mut Store) {
        if let Some(id) = client {
            let keys: Vec<Vec<u8>> = mem::take(&mut self.watched).into_iter().collect();
            store.unwatch(id, &keys);
        }
        self.watched.clear();
        let queued: usize = self.queue.iter().map(|args| cost(args)).sum();
        self.bytes = queued;
    }
}

fn cost(args: &[Vec<u8>]) -> usize {
    args.iter().fold(QUEUED_OVERHEAD, |sum, a| sum.saturating_add(a.len()).saturating_add(QUEUED_OVERHEAD))
}

/// Commands that run at once even inside MULTI.
pub(crate) fn runs_inside_multi(name: &[u8]) -> bool {
    ["exec", "discard", "multi", "watch", "quit"].iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name))
}

/// A command inside MULTI failed its checks (`text`, e.g. `ERR unknown command ...`):
/// EXEC will answer EXECABORT. A malformed EXEC itself ends the transaction at once,
/// as Redis' `execCommandAbort` does.
pub(crate) fn reject(ctx: &mut Ctx, is_exec: bool, text: &[u8]) {
    ctx.client.tx.aborted = ctx.client.tx.multi;
    if !is_exec {
        return reply::error(ctx.out, text);
    }
    ctx.client.tx.end_multi();
    let id = ctx.client.id;
    ctx.client.tx.unwatch_all(id, ctx.store);
    let mut abort = Vec::from(&b"EXECABORT Transaction discarded because of: "[..]);
    abort.extend_from_slice(text.strip_prefix(b"ERR ").unwrap_or(text));
    reply::error(ctx.out, &abort);
}

/// Queue a command inside MULTI (its checks passed).
pub(crate) fn queue(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    let tx = &mut ctx.client.tx;
    // As Redis: once the transaction is bound to fail, queued commands are not kept.
    if tx.aborted {
        return reply::simple(ctx.out, "QUEUED");
    }
    let size = cost(args);
    let limit = ctx.store.limits().max_request_bytes;
    if tx.bytes.saturating_add(size) > limit {
        tx.aborted = true;
        let mut text = Vec::from(&b"ERR transaction too large: queued commands and watched keys may hold "[..]);
        reply::push_u64(&mut text, limit as u64);
        text.extend_from_slice(b" bytes per connection; EXEC or DISCARD sooner");
        return reply::error(ctx.out, &text);
    }
    tx.bytes = tx.bytes.saturating_add(size);
    tx.queue.push(args.iter_mut().map(mem::take).collect());
    reply::simple(ctx.out, "QUEUED");
}

pub(crate) fn multi(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    if ctx.client.tx.multi {
        return reply::error(ctx.out, b"ERR MULTI calls can not be nested");
    }
    ctx.client.tx.multi = true;
    reply::ok(ctx.out);
}

pub(crate) fn discard(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    if !ctx.client.tx.multi {
        return reply::error(ctx.out, b"ERR DISCARD without MULTI");
    }
    ctx.client.tx.end_multi();
    let id = ctx.client.id;
    ctx.client.tx.unwatch_all(id, ctx.store);
    reply::ok(ctx.out);
}

pub(crate) fn exec(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    if !ctx.client.tx.multi {
        return reply::error(ctx.out, b"ERR EXEC without MULTI");
    }
    let id = ctx.client.id;
    let broken = match id {
        Some(id) if !ctx.client.tx.watched.is_empty() => {
            let keys: Vec<Vec<u8>> = ctx.client.tx.watched.iter().cloned().collect();
            ctx.store.watch_broken(id, &keys, ctx.now_ms)
        }
        _ => false,
    };
    let aborted = ctx.client.tx.aborted;
    let mut queue = mem::take(&mut ctx.client.tx.queue);
    ctx.client.tx.end_multi();
    ctx.client.tx.unwatch_all(id, ctx.store);
    if aborted {
        return reply::error(ctx.out, b"EXECABORT Transaction discarded because of previous errors.");
    }
    if broken {
        // RESP2's null array: the transaction did not run.
        return ctx.out.extend_from_slice(b"*-1\r\n");
    }
    reply::array_header(ctx.out, queue.len());
    for args in queue.iter_mut() {
        run(ctx, args);
    }
}

pub(crate) fn watch(ctx: &mut Ctx, args: &mut [Vec<u8>]) {
    if ctx.client.tx.multi {
        return reply::error(ctx.out, b"ERR WATCH inside MULTI is not allowed");
    }
    let id = ctx.client_id();
    // As Redis: once a watched key changed, watching more cannot un-break EXEC.
    if ctx.store.watch_broken(id, &[], ctx.now_ms) {
        return reply::ok(ctx.out);
    }
    let limit = ctx.store.limits().max_request_bytes;
    let tx = &mut ctx.client.tx;
    let new: usize = args
        .iter()
        .skip(1)
        .filter(|k| !tx.watched.contains(k.as_slice()))
        .map(|k| k.len().saturating_add(QUEUED_OVERHEAD))
        .sum();
    if tx.bytes.saturating_add(new) > limit {
        let mut text = Vec::from(&b"ERR too many watched keys: watched keys and queued commands may hold "[..]);
        reply::push_u64(&mut text, limit as u64);
        text.extend_from_slice(b" bytes per connection; UNWATCH first");
        return reply::error(ctx.out, &text);
    }
    for key in args.iter_mut().skip(1) {
        if tx.watched.contains(key.as_slice()) {
            continue;
        }
        ctx.store.watch(id, key, ctx.now_ms);
        tx.bytes = tx.bytes.saturating_add(key.len().saturating_add(QUEUED_OVERHEAD));
        tx.watched.insert(mem::take(key));
    }
    reply::ok(ctx.out);
}

pub(crate) fn unwatch(ctx: &mut Ctx, _args: &mut [Vec<u8>]) {
    let id = ctx.client.id;
    ctx.client.tx.unwatch_all(id, ctx.store);
    reply::ok(ctx.out);
}
