//! Property: whatever the interleaving of writes and deliveries, once every record is
//! delivered every site holds the same state, for every policy.
mod sites;

use proptest::prelude::*;
use resp_kv::sites::Policy;
use sites::Cluster;

#[derive(Debug, Clone)]
enum Action {
    Cmd { site: u8, cmd: u8, key: u8, arg: u8 },
    Deliver { from: u8, to: u8, count: u8 },
}

fn action(n: u8) -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (1..=n, 0u8..9, 0u8..3, 0u8..4).prop_map(|(site, cmd, key, arg)| Action::Cmd { site, cmd, key, arg }),
        2 => (1..=n, 1..=n, 1u8..4).prop_map(|(from, to, count)| Action::Deliver { from, to, count }),
    ]
}

fn command(cmd: u8, key: u8, arg: u8) -> String {
    match cmd {
        0 => format!("SET k{key} v{arg}"),
        1 => format!("INCR c{key}"),
        2 => format!("INCRBY c{key} {arg}"),
        3 => format!("DEL k{key} c{key} s{key}"),
        4 => format!("SADD s{key} m{arg}"),
        5 => format!("SREM s{key} m{arg}"),
        6 => format!("APPEND k{key} x{arg}"),
        7 => format!("SET c{key} {arg}"),
        _ => format!("RESOLVE k{key} r{arg}"),
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Lww), Just(Policy::SiteId), Just(Policy::Manual), Just(Policy::Merge)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_delivery_order_converges(policy in policy(), actions in prop::collection::vec(action(3), 0..60)) {
        let mut c = Cluster::new(3, policy);
        for a in &actions {
            match *a {
                Action::Cmd { site, cmd, key, arg } => { c.cmd(site, &command(cmd, key, arg)); }
                Action::Deliver { from, to, count } => for _ in 0..count { c.deliver_one(from, to); },
            }
        }
        c.heal();
        let d = c.digests();
        prop_assert!(d.iter().all(|x| *x == d[0]), "digests differ: {:x?}", d);
        for key in ["k0", "k1", "k2", "c0", "c1", "c2", "s0", "s1", "s2"] {
            let reads: Vec<String> = (1..=3).map(|id| {
                let ty = if key.starts_with('s') { "SMEMBERS" } else { "GET" };
                c.cmd(id, &format!("{ty} {key}"))
            }).collect();
            prop_assert!(reads.iter().all(|r| *r == reads[0]), "{key}: {:?}", reads);
        }
    }

    #[test]
    fn merge_counters_sum_every_increment(incs in prop::collection::vec((1u8..=3, 1i64..5), 1..40)) {
        let mut c = Cluster::new(3, Policy::Merge);
        for (site, by) in &incs {
            c.cmd(*site, &format!("INCRBY n {by}"));
        }
        c.heal();
        let total: i64 = incs.iter().map(|(_, by)| by).sum();
        for id in 1..=3 {
            prop_assert_eq!(c.cmd(id, "GET n"), format!("${}\r\n{}\r\n", total.to_string().len(), total));
        }
    }
}
