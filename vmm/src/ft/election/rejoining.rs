//! A replica member on its way back into the group: what it tells its elector
//! once it really follows its primary again.
//!
//! ```text
//!   state transfer at start       -> report() at once (it holds the primary's state)
//!   restarted on its --data-dir   -> restore checkpoint, replay its disk log, ask to resume
//!                                      Resume accepted -> report()
//!                                      State restored  -> report()
//!                                      neither         -> never: it stands down and starts over
//! ```
//! Until then the member is `Rejoining`: it neither votes nor stands, others do
//! not count it, and status does not show it following. A member that said it
//! followed as soon as it had restored its checkpoint, still replaying its own
//! log, left a group with no member able to lead when the primary died next.
use super::elector::Elector;
use super::rules::MemberId;
use std::sync::Arc;

/// A member that will follow `primary` once it has rejoined it.
pub struct Rejoining {
    pub elector: Arc<Elector>,
    /// The member it rejoins.
    pub primary: MemberId,
}

impl Rejoining {
    /// It follows its primary with a log again: it may vote and stand, and counts as a
    /// follower.
    pub fn report(self) {
        self.elector.received_state();
        self.elector.following(self.primary);
    }
}

impl std::fmt::Debug for Rejoining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rejoining {{ primary: {} }}", self.primary)
    }
}
