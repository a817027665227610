//! Structure-aware fuzzing of every decoder that reads bytes from a peer, a client or a
//! file: the log frame and record decoder, the record file, the handshake and attach
//! messages, the state-transfer messages, RESP with the whole command layer, and the
//! multi-leader site link (its frames, and a site's inbound link with a real store).
//!
//! Each [`Target`] builds *valid* inputs from a seeded generator (records, messages,
//! commands, frames encoded by the real encoders), then mutates them (bit flips, length
//! fields set to huge values, truncation, splicing, duplication), so most inputs reach
//! deep into the decoders instead of failing at the first byte. A [`campaign`] runs one
//! target for N inputs and reports panics, the slowest input and the largest single
//! allocation (measured by [`guard::Guard`] when a binary installs it as its global
//! allocator). Everything is deterministic per seed: a failure names the seed and the
//! input index that reproduce it.
//!
//! Why not coverage-guided: see README, "Fuzzing".

pub mod campaign;
pub mod guard;
pub mod mutate;
pub mod rng;
pub mod seeds;
pub mod targets;

pub use campaign::{campaign, Report};
pub use targets::Target;

/// The largest single allocation any target may make for inputs of at most
/// `largest_input` bytes: 512 KiB (the RESP target's memory limit and reply caps) plus
/// eight times the input. A decoder that trusted a length field would allocate up to
/// what the field claims (a 4 GiB frame, a `$4194304` bulk) and cross it.
pub fn alloc_bound(largest_input: usize) -> usize {
    512 * 1024 + 8 * largest_input
}
