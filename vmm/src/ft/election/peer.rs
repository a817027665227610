//! The group's membership and each member's peer port: where votes are asked
//! for and probes answered (`logging_channel::vote` draws the messages).
//!
//! ```text
//!   --group 1=10.0.0.1:7000,2=10.0.0.2:7000,3=10.0.0.3:7000
//!     member N's peer port:  its address           (votes, probes: one request per connection)
//!     member N's join port:  the same IP, port + 1  (its log stream, while it is primary)
//! ```
//! Each connection to a peer port carries one request and one reply, both
//! within [`PEER_IO_TIMEOUT`] (the TLS handshake included); each is served on its
//! own short-lived thread, at most [`MAX_PEER_CONNECTIONS`] at once, so a peer
//! that connects and sends nothing (or sends slowly) delays no vote. A peer whose
//! certificate the group's CA did not sign gets no answer: its request is never read.
use super::rules::{MemberId, Rank};
use crate::host::tls::{Channel, Security};
use logging_channel::vote::{self, PeerMessage};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Members a group may have (votes are asked of all at once, one thread each).
pub const MAX_MEMBERS: usize = 9;
/// Peer-port connections served at once; more are closed at once.
pub const MAX_PEER_CONNECTIONS: usize = 32;
/// A request or reply on a peer port must arrive within this long.
pub const PEER_IO_TIMEOUT: Duration = Duration::from_millis(500);

/// Why the membership is unusable.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(
        "--group {0:?}: expected ID=IP:PORT[,ID=IP:PORT...], e.g. 1=10.0.0.1:7000,2=10.0.0.2:7000,3=10.0.0.3:7000"
    )]
    Syntax(String),
    #[error("--group lists member {0} twice")]
    Duplicate(MemberId),
    #[error("--group has {0} members; a group has 1 to {MAX_MEMBERS}")]
    Size(usize),
    #[error("--id {0} is not in --group")]
    NotListed(MemberId),
    #[error("member ids are 1 or more (0 means nobody), got {0}")]
    ZeroId(String),
    #[error("a group of {0} members needs a --witness to survive the loss of one (an even number of voters ties)")]
    NeedsWitness(usize),
}

/// One member as every member knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    /// Its peer port.
    pub peer: SocketAddr,
}

impl Member {
    /// Where it takes followers while it is primary: its peer port + 1.
    pub fn join_addr(&self) -> String {
        SocketAddr::new(self.peer.ip(), self.peer.port().wrapping_add(1)).to_string()
    }
}

/// The fixed membership, and who this member is in it.
#[derive(Debug, Clone)]
pub struct Membership {
    pub me: Rank,
    pub members: Vec<Member>,
    /// Whether a witness votes too.
    pub witness: bool,
    /// A tag of the membership and the machine; messages of other groups carry another.
    pub tag: u64,
    /// How connections to the members are locked.
    pub security: Security,
}

impl Membership {
    /// Parses `--group` for member `id`; `machine` (the guest's identity) goes into the
    /// tag; peers are reached with `security`.
    pub fn parse(
        spec: &str,
        me: Rank,
        witness: bool,
        machine: &logging_channel::LogHeader,
        security: Security,
    ) -> Result<Membership, MembershipError> {
        let mut members: Vec<Member> = Vec::new();
        for item in spec.split(',') {
            let (id, addr) = item.split_once('=').ok_or_else(|| MembershipError::Syntax(spec.into()))?;
            let id: MemberId = id.trim().parse().map_err(|_| MembershipError::Syntax(spec.into()))?;
            if id == 0 {
                return Err(MembershipError::ZeroId(item.into()));
            }
            let peer = addr
                .trim()
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| MembershipError::Syntax(spec.into()))?;
            if members.iter().any(|m| m.id == id) {
                return Err(MembershipError::Duplicate(id));
            }
            members.push(Member { id, peer });
        }
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return Err(MembershipError::Size(members.len()));
        }
        if !members.iter().any(|m| m.id == me.id) {
            return Err(MembershipError::NotListed(me.id));
        }
        if members.len().is_multiple_of(2) && !witness {
            return Err(MembershipError::NeedsWitness(members.len()));
        }
        members.sort_by_key(|m| m.id);
        let mut h = blake3::Hasher::new();
        for m in &members {
            h.update(format!("{}={};", m.id, m.peer).as_bytes());
        }
        h.update(&machine.guest_image_digest);
        h.update(&machine.mem_size.to_le_bytes());
        let tag = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or_default());
        Ok(Membership { me, members, witness, tag, security })
    }

    /// The ids of every member.
    pub fn ids(&self) -> Vec<MemberId> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// This member's entry.
    pub fn mine(&self) -> &Member {
        self.member(self.me.id).unwrap_or(&self.members[0])
    }

    /// Member `id`'s entry.
    pub fn member(&self, id: MemberId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Every member but this one.
    pub fn others(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.id != self.me.id)
    }
}

/// Answers one request on a peer port (the elector); named, so a reader can follow it.
pub trait PeerService: Send + Sync + 'static {
    /// The reply to `request` from `from`, or `None` to close without one.
    fn answer(&self, request: PeerMessage, from: SocketAddr) -> Option<PeerMessage>;
}

/// Serves `listener` on the `peer-listen` thread until the process ends.
pub fn serve(listener: TcpListener, service: Arc<dyn PeerService>, security: Security) -> std::io::Result<()> {
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("peer-listen".into()).spawn(move || loop {
        let (conn, from) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("peer port: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_PEER_CONNECTIONS {
            busy.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(%from, "peer port: {MAX_PEER_CONNECTIONS} connections already open; closed this one");
            continue;
        }
        let (service, busy, security) = (service.clone(), busy.clone(), security.clone());
        let spawned = std::thread::Builder::new().name("peer-conn".into()).spawn(move || {
            match security.server(conn, PEER_IO_TIMEOUT) {
                Ok(conn) => serve_one(conn, from, &*service),
                Err(e) => tracing::warn!(%from, "peer port: refused a connection: {e}"),
            }
            busy.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            tracing::warn!("peer port: cannot start a thread for {from}: {e}");
        }
    })?;
    Ok(())
}

fn serve_one(mut conn: Channel, from: SocketAddr, service: &dyn PeerService) {
    let _ = conn.set_read_timeout(Some(PEER_IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(PEER_IO_TIMEOUT));
    let request = match vote::read(&mut conn) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%from, "peer port: refused a malformed or slow request: {e}");
            return;
        }
    };
    if let Some(reply) = service.answer(request, from) {
        let mut out = Vec::with_capacity(64);
        vote::encode(&reply, &mut out);
        let _ = conn.write_all(&out);
    }
}

/// Sends `request` to the peer port at `addr` and waits for one reply, all within
/// `timeout` (connecting included).
pub fn ask(
    addr: SocketAddr,
    request: &PeerMessage,
    timeout: Duration,
    security: &Security,
) -> Result<PeerMessage, String> {
    let t0 = std::time::Instant::now();
    let conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let left = timeout.saturating_sub(t0.elapsed()).max(Duration::from_millis(1));
    let mut conn = security.client(conn, left).map_err(|e| format!("{addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(64);
    vote::encode(request, &mut out);
    conn.write_all(&out).map_err(|e| format!("sending to {addr} failed: {e}"))?;
    match vote::read(&mut conn) {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(format!("{addr} closed without a reply")),
        Err(e) => Err(format!("{addr} replied with something unreadable: {e}")),
    }
}

/// A member's answer to a request, or why there was none.
pub type Answer = (MemberId, Result<PeerMessage, String>);

/// When [`ask_all`] may stop collecting answers before every target has answered.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Wait for every target (or the timeout): probes.
    Everyone,
    /// Stop once grants for `epoch`, with the asker's own vote, reach `needed`: votes.
    Granted { epoch: u64, needed: usize },
}

impl Until {
    fn settled(self, answers: &[Answer]) -> bool {
        match self {
            Until::Everyone => false,
            Until::Granted { epoch, needed } => {
                let yes = answers
                    .iter()
                    .filter(|(_, a)| matches!(a, Ok(PeerMessage::VoteReply(r)) if r.granted && r.epoch == epoch))
                    .count();
                1 + yes >= needed
            }
        }
    }
}

/// Asks every one of `targets` at once and collects their answers until `until` says
/// the ones so far settle the question, every target answered, or `timeout` passed.
/// Returns each answering target's id with its answer; a slow or hung member only
/// delays the caller when its answer is needed.
pub fn ask_all(
    targets: &[Member],
    request: &PeerMessage,
    timeout: Duration,
    until: Until,
    security: &Security,
) -> Vec<Answer> {
    let each: Vec<(Member, Duration)> = targets.iter().map(|m| (m.clone(), timeout)).collect();
    ask_each(&each, request, until, security)
}

/// [`ask_all`] with a timeout per target: a member that did not answer the last probe
/// gets a short one, so that a hung member does not hold an election up.
pub fn ask_each(
    targets: &[(Member, Duration)],
    request: &PeerMessage,
    until: Until,
    security: &Security,
) -> Vec<Answer> {
    let timeout = targets.iter().map(|(_, t)| *t).max().unwrap_or_default();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut asked = 0;
    for (m, timeout) in targets {
        let (tx, m, request, timeout, security) = (tx.clone(), m.clone(), request.clone(), *timeout, security.clone());
        let spawned = std::thread::Builder::new().name("peer-ask".into()).spawn(move || {
            let _ = tx.send((m.id, ask(m.peer, &request, timeout, &security)));
        });
        match spawned {
            Ok(_) => asked += 1,
            Err(e) => tracing::warn!("cannot ask member {}: {e}", m.id),
        }
    }
    drop(tx);
    let deadline = std::time::Instant::now() + timeout + Duration::from_millis(5);
    let mut answers = Vec::with_capacity(asked);
    while answers.len() < asked && !until.settled(&answers) {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(answer) => answers.push(answer),
            Err(_) => break,
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> logging_channel::LogHeader {
        logging_channel::LogHeader {
            guest_image_digest: [7; 32],
            mem_size: 64 << 20,
            cpuid_digest: [1; 32],
            tick_hz: 250,
        }
    }

    fn me(id: MemberId) -> Rank {
        Rank { id, priority: 1 }
    }

    #[test]
    fn a_group_spec_parses_and_each_member_joins_at_its_peer_port_plus_one() {
        let g = Membership::parse(
            "2=127.0.0.1:7100,1=127.0.0.1:7000,3=127.0.0.1:7200",
            me(2),
            false,
            &header(),
            Security::Insecure,
        )
        .expect("parses");
        assert_eq!(g.ids(), vec![1, 2, 3]);
        assert_eq!(g.mine().join_addr(), "127.0.0.1:7101");
        assert_eq!(g.others().map(|m| m.id).collect::<Vec<_>>(), vec![1, 3]);
        let same = Membership::parse(
            "1=127.0.0.1:7000,2=127.0.0.1:7100,3=127.0.0.1:7200",
            me(1),
            false,
            &header(),
            Security::Insecure,
        )
        .expect("parses");
        assert_eq!(g.tag, same.tag, "every member computes the same tag");
        let other = Membership::parse(
            "1=127.0.0.1:7000,2=127.0.0.1:7100,3=127.0.0.1:7300",
            me(1),
            false,
            &header(),
            Security::Insecure,
        )
        .expect("parses");
        assert_ne!(g.tag, other.tag, "another membership is another group");
    }

    #[test]
    fn bad_group_specs_say_what_is_wrong() {
        let h = header();
        let err = |spec: &str, witness| {
            Membership::parse(spec, me(1), witness, &h, Security::Insecure).expect_err(spec).to_string()
        };
        assert!(err("1=127.0.0.1:7000,1=127.0.0.1:7001,2=127.0.0.1:1", false).contains("twice"));
        assert!(err("2=127.0.0.1:7000,3=127.0.0.1:7001,4=127.0.0.1:1", false).contains("not in --group"));
        assert!(err("1=127.0.0.1:7000,2=127.0.0.1:7001", false).contains("needs a --witness"));
        assert!(err("1=nowhere", false).contains("expected ID=IP:PORT"));
        assert!(err("0=127.0.0.1:1,1=127.0.0.1:2,2=127.0.0.1:3", false).contains("0 means nobody"));
        let ten: Vec<String> = (1..=10).map(|i| format!("{i}=127.0.0.1:{}", 7000 + i)).collect();
        assert!(err(&ten.join(","), false).contains("1 to 9"));
        assert!(Membership::parse("1=127.0.0.1:7000,2=127.0.0.1:7001", me(1), true, &h, Security::Insecure).is_ok());
    }

    struct Echo;
    impl PeerService for Echo {
        fn answer(&self, request: PeerMessage, _from: SocketAddr) -> Option<PeerMessage> {
            Some(request)
        }
    }

    /// Counts the requests that reach it.
    #[derive(Default)]
    struct Counting(AtomicUsize);
    impl PeerService for Counting {
        fn answer(&self, request: PeerMessage, _from: SocketAddr) -> Option<PeerMessage> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Some(request)
        }
    }

    #[test]
    fn a_vote_request_from_a_peer_without_the_groups_certificate_never_reaches_the_elector() {
        let (_ours, ids) = crate::host::tls::tests::group(2);
        let (_theirs, strangers) = crate::host::tls::tests::group(1);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = Arc::new(Counting::default());
        serve(listener, service.clone(), ids[0].clone()).expect("serve");
        let vote = PeerMessage::VoteRequest(logging_channel::vote::VoteRequest {
            group: 1,
            epoch: 9,
            candidate: 2,
            priority: 1,
            log_epoch: 1,
            log_exit: 100,
        });
        let timeout = Duration::from_secs(2);
        assert!(ask(addr, &vote, timeout, &Security::Insecure).is_err(), "in clear");
        assert!(ask(addr, &vote, timeout, &strangers[0]).is_err(), "another group's certificate");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(service.0.load(Ordering::SeqCst), 0, "no request of theirs was read");
        assert_eq!(ask(addr, &vote, timeout, &ids[1]), Ok(vote.clone()), "a member is answered");
        assert_eq!(service.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_silent_peer_does_not_delay_a_real_request_and_past_the_limit_connections_are_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        serve(listener, Arc::new(Echo), Security::Insecure).expect("serve");
        // Silent peers hold connections open without sending anything.
        let silent: Vec<TcpStream> =
            (0..MAX_PEER_CONNECTIONS + 5).filter_map(|_| TcpStream::connect(addr).ok()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let probe = PeerMessage::Probe(logging_channel::vote::Probe { group: 1, from: 2 });
        // Past the limit, a new connection is closed at once rather than left hanging...
        let t0 = std::time::Instant::now();
        assert!(ask(addr, &probe, Duration::from_secs(2), &Security::Insecure).is_err());
        assert!(t0.elapsed() < Duration::from_secs(1), "closed at once, not after a timeout");
        // ...and once the silent ones time out, requests are answered again.
        std::thread::sleep(PEER_IO_TIMEOUT + Duration::from_millis(300));
        assert_eq!(ask(addr, &probe, Duration::from_secs(2), &Security::Insecure), Ok(probe));
        drop(silent);
    }

    #[test]
    fn silent_peers_delay_no_tls_request_their_handshakes_run_beside_it() {
        let (_certs, ids) = crate::host::tls::tests::group(2);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        serve(listener, Arc::new(Echo), ids[0].clone()).expect("serve");
        let silent: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).expect("connect")).collect();
        std::thread::sleep(Duration::from_millis(50));
        let probe = PeerMessage::Probe(logging_channel::vote::Probe { group: 1, from: 2 });
        let t0 = std::time::Instant::now();
        assert_eq!(ask(addr, &probe, PEER_IO_TIMEOUT, &ids[1]), Ok(probe.clone()));
        assert!(t0.elapsed() < PEER_IO_TIMEOUT / 2, "waited {:?} behind silent peers", t0.elapsed());
        drop(silent);
    }
}
