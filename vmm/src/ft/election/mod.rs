//! The replica group's election (`ftvmm replica`): members with a fixed
//! membership vote in a primary, Raft-style, with the epoch as the term.
//!
//! - [`rules`]: who may vote for whom, the majority, and how many followers
//!   must hold output before it leaves; pure, model-checked.
//! - [`ballot_file`]: the ballot on disk (Raft's stable storage);
//! - [`peer`]: the membership and the peer port (votes and probes);
//! - [`witness`]: the voter with no log that even-sized groups add;
//! - [`elector`]: a member's side of every election: its ballot, its role,
//!   finding the primary or standing;
//! - [`rejoining`]: what a member tells its elector once it follows again.
pub mod ballot_file;
pub mod elector;
pub mod peer;
pub mod rejoining;
pub mod rules;
pub mod witness;
