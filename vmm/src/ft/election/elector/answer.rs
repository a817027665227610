//! The elector's answers on the peer port (vote requests and probes), and its part
//! of `status`.
use super::{Elector, PeerRole};
use crate::ft::election::peer::PeerService;
use crate::ft::election::rules::{self, LogPosition, Rank, Request, Voter};
use logging_channel::vote::{PeerMessage, ProbeReply, VoteReply, VoteRequest};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

impl Elector {
    /// The election part of `status`, as JSON fields.
    pub fn json_fields(&self) -> String {
        let b = *self.lock_ballot();
        let local = self.local();
        let position = self.position();
        let mut out = format!(
            "\"member\":{},\"member_role\":\"{}\",\"ballot_epoch\":{},\"voted_for\":{},\"following\":{},\
             \"log_position\":[{},{}],\"elections_won\":{},",
            self.group.me.id,
            local.role.name(),
            b.epoch,
            b.voted_for.unwrap_or(0),
            local.primary,
            position.epoch,
            position.exit,
            self.elections_won.load(std::sync::atomic::Ordering::Relaxed),
        );
        if let Some(h) = &*self.last_election.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = write!(out, "\"last_election\":{{\"epoch\":{},\"winner\":{},\"ms\":{}}},", h.epoch, h.winner, h.ms);
        }
        out.push_str("\"members\":[");
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (i, m) in self.group.members.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            match seen.get(&m.id) {
                _ if m.id == self.group.me.id => {
                    let _ = write!(
                        out,
                        "{sep}{{\"id\":{},\"peer\":\"{}\",\"role\":\"{}\",\"epoch\":{}}}",
                        m.id,
                        m.peer,
                        local.role.name(),
                        b.epoch
                    );
                }
                Some(r) => {
                    let _ = write!(
                        out,
                        "{sep}{{\"id\":{},\"peer\":\"{}\",\"role\":\"{}\",\"epoch\":{},\"voted_for\":{},\"log_position\":[{},{}]}}",
                        m.id, m.peer, r.role.name(), r.epoch, r.voted_for, r.log_epoch, r.log_exit
                    );
                }
                None => {
                    let _ = write!(out, "{sep}{{\"id\":{},\"peer\":\"{}\",\"role\":\"unknown\"}}", m.id, m.peer);
                }
            }
        }
        out.push_str("],");
        out
    }
}

impl PeerService for Elector {
    fn answer(&self, request: PeerMessage, from: SocketAddr) -> Option<PeerMessage> {
        match request {
            PeerMessage::VoteRequest(r) if r.group == self.group.tag => Some(self.vote(r, from)),
            PeerMessage::Probe(p) if p.group == self.group.tag => {
                let b = *self.lock_ballot();
                let local = self.local();
                let position = self.position();
                let hears = match local.role {
                    PeerRole::Primary => self.group.me.id,
                    PeerRole::Follower if self.hears_primary() => local.primary,
                    _ => self.backs().unwrap_or(0),
                };
                Some(PeerMessage::ProbeReply(ProbeReply {
                    group: self.group.tag,
                    member: self.group.me.id,
                    epoch: b.epoch,
                    role: local.role,
                    priority: self.group.me.priority,
                    primary: hears,
                    log_epoch: position.epoch,
                    log_exit: position.exit,
                    voted_for: b.voted_for.unwrap_or(0),
                }))
            }
            other => {
                tracing::warn!(%from, "peer port: refused a message of another group or kind: {other:?}");
                None
            }
        }
    }
}

impl Elector {
    fn vote(&self, r: VoteRequest, from: SocketAddr) -> PeerMessage {
        let local = self.local();
        let voter = Voter {
            me: self.group.me,
            position: self.position(),
            is_primary: local.role == PeerRole::Primary,
            hears_primary: (local.role == PeerRole::Follower && self.hears_primary())
                || self.backs().is_some_and(|c| c != r.candidate),
            lost_log: !self.has_log(),
        };
        let request = Request {
            epoch: r.epoch,
            candidate: Rank { id: r.candidate, priority: r.priority },
            position: LogPosition { epoch: r.log_epoch, exit: r.log_exit },
        };
        let mut b = self.lock_ballot();
        let before = *b;
        let verdict = rules::decide(&mut b, &self.group.ids(), &request, &voter);
        // Stable storage first: a grant (or a new epoch) must survive a crash right after.
        if *b != before {
            if let Err(e) = self.file.store(&b) {
                *b = before;
                tracing::error!("{e}");
                return self.reply(before.epoch, false, "this member cannot store its ballot".into());
            }
        }
        let epoch = b.epoch;
        drop(b);
        match verdict {
            Ok(()) => {
                // Fencing: having voted for a rival in `epoch`, it must stop acknowledging
                // an older primary before the rival can count on that vote.
                self.fence.fetch_max(epoch, std::sync::atomic::Ordering::SeqCst);
                if local.role == PeerRole::Candidate {
                    self.set_local(PeerRole::Follower, 0);
                }
                *self.granted.lock().unwrap_or_else(|p| p.into_inner()) = Some((r.candidate, Instant::now()));
                tracing::info!(%from, candidate = r.candidate, epoch, "voted for member {} in epoch {epoch}", r.candidate);
                self.reply(epoch, true, String::new())
            }
            Err(why) => {
                tracing::info!(%from, candidate = r.candidate, asked = r.epoch, "refused a vote: {why}");
                self.reply(epoch, false, why.to_string())
            }
        }
    }

    fn reply(&self, epoch: u64, granted: bool, why: String) -> PeerMessage {
        PeerMessage::VoteReply(VoteReply { group: self.group.tag, epoch, voter: self.group.me.id, granted, why })
    }
}
