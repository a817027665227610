//! The four conflict policies, one scenario each, plus the causality and bound cases.
mod sites;

use resp_kv::sites::Policy;
use sites::Cluster;

/// Partition, then the same key written concurrently at all three sites, then heal.
fn concurrent_writes(policy: Policy) -> Cluster {
    let mut c = Cluster::new(3, policy);
    assert_eq!(c.cmd(1, "SET n 10"), "+OK\r\n");
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "INCR n"), ":11\r\n");
        c.cmd(id, &format!("SET s from-{id}"));
        c.cmd(id, &format!("SADD set m{id}"));
    }
    c.heal();
    let d = c.digests();
    assert!(d.iter().all(|x| *x == d[0]), "{policy:?} did not converge: {d:x?}");
    c
}

#[test]
fn merge_adds_every_sites_increments_joins_strings_and_unions_sets() {
    let mut c = concurrent_writes(Policy::Merge);
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "GET n"), "$2\r\n13\r\n");
        assert_eq!(c.cmd(id, "GET s"), "$20\r\nfrom-1|from-2|from-3\r\n");
        assert_eq!(c.cmd(id, "SCARD set"), ":3\r\n");
    }
}

#[test]
fn lww_keeps_the_highest_timestamp_and_counts_the_loss() {
    let mut c = Cluster::new(3, Policy::Lww);
    // Site 3's writes carry the highest timestamps: its clock reads later.
    c.sites[2].now_ms += 100;
    c.sites[1].now_ms += 50;
    assert_eq!(c.cmd(1, "SET n 10"), "+OK\r\n");
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "INCR n"), ":11\r\n");
        c.cmd(id, &format!("SET s from-{id}"));
        c.cmd(id, &format!("SADD set m{id}"));
    }
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "GET s"), "$6\r\nfrom-3\r\n");
        assert_eq!(c.cmd(id, "GET n"), "$2\r\n11\r\n");
        assert_eq!(c.cmd(id, "SMEMBERS set"), "*1\r\n$2\r\nm3\r\n");
    }
    assert!(c.cmd(1, "INFO sites").contains("sites_lost_writes:"));
    assert!(!c.cmd(1, "INFO sites").contains("sites_lost_writes:0\r"));
}

#[test]
fn site_id_lets_the_highest_site_win_even_when_it_wrote_first() {
    let mut c = Cluster::new(3, Policy::SiteId);
    c.cmd(3, "SET k three");
    c.cmd(1, "SET k one");
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "GET k"), "$5\r\nthree\r\n");
    }
}

#[test]
fn manual_keeps_siblings_until_resolve_and_resolve_converges() {
    let mut c = concurrent_writes(Policy::Manual);
    let listing = c.cmd(2, "CONFLICTS s");
    assert!(listing.starts_with("*3\r\n"), "{listing}");
    for id in 1..=3 {
        assert!(listing.contains(&format!("from-{id}")), "{listing}");
    }
    assert!(c.cmd(1, "INFO sites").contains("sites_conflicted_keys:3\r\n"));
    assert_eq!(c.cmd(2, "RESOLVE s chosen"), "+OK\r\n");
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "GET s"), "$6\r\nchosen\r\n");
        assert!(c.cmd(id, "CONFLICTS s").starts_with("*1\r\n"));
    }
    let d = c.digests();
    assert!(d.iter().all(|x| *x == d[0]));
}

#[test]
fn a_write_that_follows_another_wins_under_lww_even_from_a_slow_clock() {
    // Site 2's clock is 500 ms behind site 1's.
    let mut c = Cluster::with_offsets(Policy::Lww, &[0, -500, 0]);
    c.cmd(1, "SET k first");
    c.deliver_all(1, 2);
    assert_eq!(c.cmd(2, "GET k"), "$5\r\nfirst\r\n");
    c.cmd(2, "SET k second");
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "GET k"), "$6\r\nsecond\r\n");
    }
}

#[test]
fn concurrent_writes_from_a_slow_clock_lose_under_lww() {
    // The other side of the coin: without causality, skew decides.
    let mut c = Cluster::with_offsets(Policy::Lww, &[0, -500]);
    c.cmd(2, "SET k slow");
    c.cmd(1, "SET k fast");
    c.heal();
    assert_eq!(c.cmd(2, "GET k"), "$4\r\nfast\r\n");
}

#[test]
fn manual_lists_at_most_max_siblings_and_counts_the_rest() {
    let n = resp_kv::sites::MAX_SIBLINGS as u8 + 2;
    let mut c = Cluster::new(n, Policy::Manual);
    for id in 1..=n {
        c.cmd(id, &format!("SET k v{id}"));
    }
    c.heal();
    let listing = c.cmd(1, "CONFLICTS k");
    assert!(listing.starts_with(&format!("*{}\r\n", resp_kv::sites::MAX_SIBLINGS)), "{listing}");
    assert!(listing.contains(&format!("v{n}")), "newest listed first: {listing}");
    assert!(!c.cmd(1, "INFO sites").contains("sites_siblings_folded:0\r"));
    let d = c.digests();
    assert!(d.iter().all(|x| *x == d[0]));
}

#[test]
fn merge_add_wins_over_a_concurrent_remove() {
    let mut c = Cluster::new(2, Policy::Merge);
    c.cmd(1, "SADD s x");
    c.heal();
    c.cmd(1, "SREM s x");
    c.cmd(2, "SADD s x");
    c.heal();
    assert_eq!(c.cmd(1, "SISMEMBER s x"), ":1\r\n");
    assert_eq!(c.cmd(2, "SISMEMBER s x"), ":1\r\n");
}

#[test]
fn delete_then_late_write_it_had_seen_stays_deleted() {
    let mut c = Cluster::new(3, Policy::Lww);
    c.cmd(1, "SET k v");
    c.deliver_all(1, 2);
    c.cmd(2, "DEL k");
    // Site 3 hears of the delete before the write it deleted.
    c.deliver_all(2, 3);
    c.deliver_all(1, 3);
    c.heal();
    for id in 1..=3 {
        assert_eq!(c.cmd(id, "GET k"), "$-1\r\n");
    }
}

#[test]
fn commands_that_are_not_replicated_are_refused() {
    let mut c = Cluster::new(2, Policy::Lww);
    assert!(c.cmd(1, "EXPIRE k 10").starts_with("-ERR 'EXPIRE' is not replicated"));
    c.cmd(1, "SET k v");
    assert!(c.cmd(1, "INFO keyspace").contains("db0:keys=1,"), "INFO counts the replicated keyspace");
    assert_eq!(c.cmd(1, "DBSIZE"), ":1\r\n");
    assert!(c.cmd(1, "SET k v EX 10").starts_with("-ERR SET options"));
    assert_eq!(c.cmd(1, "PING"), "+PONG\r\n");
}

#[test]
fn past_the_log_bound_local_writes_are_refused_until_the_peer_acknowledges() {
    let mut config = sites::config(1, 2, Policy::Lww, 1_700_000_000_000);
    config.max_log_bytes = 1_000;
    let mut store = resp_kv::Store::with_sites(resp_kv::Limits::default(), config);
    let mut conn = resp_kv::Conn::new();
    let info = resp_kv::ServerInfo::default();
    let mut run = |store: &mut resp_kv::Store, line: &str| {
        let mut out = Vec::new();
        conn.feed(format!("{line}\r\n").as_bytes(), store, 5, &info, &mut out);
        String::from_utf8(out).unwrap()
    };
    let mut accepted = 0;
    while run(&mut store, "SET k some-value") == "+OK\r\n" {
        accepted += 1;
        assert!(accepted < 100, "the log bound never bit");
    }
    let refused = run(&mut store, "SET k v");
    assert!(refused.starts_with("-ERR site link log full"), "{refused}");
    assert!(refused.contains("site 2"), "names the peer holding the log: {refused}");
    assert_eq!(run(&mut store, "GET k"), "$10\r\nsome-value\r\n", "the refused write changed nothing");
    store.sites_mut().unwrap().ack(2, accepted);
    assert_eq!(store.sites().unwrap().log_bytes(), 0);
    assert_eq!(run(&mut store, "SET k v"), "+OK\r\n");
}

#[test]
fn transactions_work_in_sites_mode_and_keyspace_walks_are_refused() {
    let mut c = Cluster::new(2, Policy::Lww);
    assert_eq!(c.cmd(1, "MULTI"), "+OK\r\n");
    assert_eq!(c.cmd(1, "SET k v"), "+QUEUED\r\n");
    assert_eq!(c.cmd(1, "INCR n"), "+QUEUED\r\n");
    assert_eq!(c.cmd(1, "EXEC"), "*2\r\n+OK\r\n:1\r\n");
    for refused in ["WATCH k", "KEYS *", "SCAN 0", "RANDOMKEY", "EXPIRE k 5", "GETEX k"] {
        let reply = c.cmd(1, refused);
        assert!(reply.contains("is not replicated between sites"), "{refused}: {reply}");
    }
}
