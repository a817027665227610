//! The replica group's election (`ftvmm replica`): members with a fixed
//! membership vote in a primary, Raft-style, with the epoch as the term.
//!
//! - [`rules`]: who may vote for whom, the majority, and how many followers
//!   must hold output before it leaves; pure, model-checked.
pub mod rules;
