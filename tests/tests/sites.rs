//! Multi-leader sites with real processes: three sites in their own namespaces (site 3
//! a primary/backup pair where it matters), joined by a router a test can cut.
use ftvmm_tests::pair::serial;
use ftvmm_tests::sites::{boot, SitesTopology};
use std::time::Duration;

const CONVERGE: Duration = Duration::from_secs(20);

#[test]
fn writes_at_each_site_appear_at_every_other_site() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "lww", [&[], &[], &[]], true);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["SET", &format!("from-{site}"), &format!("v{site}")]), "OK");
    }
    topo.converge(CONVERGE);
    for reader in 1..=3u8 {
        for writer in 1..=3u8 {
            assert_eq!(topo.text(reader, &["GET", &format!("from-{writer}")]), format!("v{writer}"));
        }
    }
}

/// Partition every site from the others, write the same keys at all three, heal.
fn partitioned_concurrent_writes(topo: &SitesTopology) {
    assert_eq!(topo.text(1, &["SET", "n", "10"]), "OK");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        topo.link(site, false);
    }
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["INCR", "n"]), "11");
        assert_eq!(topo.text(site, &["SET", "s", &format!("from-{site}")]), "OK");
        assert_eq!(topo.text(site, &["SADD", "set", &format!("m{site}")]), "1");
    }
    for site in 1..=3u8 {
        topo.link(site, true);
    }
    topo.converge(CONVERGE);
}

fn members(topo: &SitesTopology, site: u8) -> Vec<String> {
    match topo.query(site, &["SMEMBERS", "set"]).expect("SMEMBERS") {
        redis::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                other => panic!("member {other:?}"),
            })
            .collect(),
        other => panic!("SMEMBERS gave {other:?}"),
    }
}

#[test]
fn after_a_partition_merge_sums_counters_joins_strings_and_unions_sets() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "merge", [&[], &[], &[]], true);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "n"]), "13", "10 plus one INCR at each of three sites");
        assert_eq!(topo.text(site, &["GET", "s"]), "from-1|from-2|from-3");
        assert_eq!(members(&topo, site), ["m1", "m2", "m3"]);
    }
}

#[test]
fn after_a_partition_lww_keeps_the_highest_timestamp() {
    let _turn = serial();
    let topo = SitesTopology::up();
    // Site 2's clock runs 5 s ahead, so its concurrent writes carry the highest timestamps.
    let _sites = boot(&topo, "lww", [&[], &["--clock-offset-ms", "5000"], &[]], true);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "n"]), "11", "two of three increments are lost");
        assert_eq!(topo.text(site, &["GET", "s"]), "from-2");
        assert_eq!(members(&topo, site), ["m2"]);
    }
    let info = topo.text(1, &["INFO", "sites"]);
    assert!(!info.contains("sites_lost_writes:0\r"), "{info}");
}

#[test]
fn after_a_partition_site_id_lets_site_3_win() {
    let _turn = serial();
    let topo = SitesTopology::up();
    // Even with the oldest clock, site 3 wins.
    let _sites = boot(&topo, "site-id", [&["--clock-offset-ms", "5000"], &[], &["--clock-offset-ms", "-5000"]], false);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "s"]), "from-3");
        assert_eq!(members(&topo, site), ["m3"]);
    }
}

#[test]
fn after_a_partition_manual_lists_every_sibling_and_resolve_converges() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "manual", [&[], &[], &[]], false);
    partitioned_concurrent_writes(&topo);
    for site in 1..=3u8 {
        let listing = format!("{:?}", topo.query(site, &["CONFLICTS", "s"]).expect("CONFLICTS"));
        for writer in 1..=3 {
            assert!(listing.contains(&format!("from-{writer}")), "site {site}: {listing}");
        }
        assert!(topo.text(site, &["INFO", "sites"]).contains("sites_conflicted_keys:3\r"));
    }
    assert_eq!(topo.text(2, &["RESOLVE", "s", "chosen"]), "OK");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "s"]), "chosen");
        let listing = format!("{:?}", topo.query(site, &["CONFLICTS", "s"]).expect("CONFLICTS"));
        assert!(!listing.contains("from-"), "resolved everywhere: {listing}");
    }
}

#[test]
fn a_write_that_follows_another_wins_under_lww_from_a_clock_500ms_behind() {
    let _turn = serial();
    let topo = SitesTopology::up();
    let _sites = boot(&topo, "lww", [&[], &["--clock-offset-ms", "-500"], &[]], false);
    assert_eq!(topo.text(1, &["SET", "k", "first"]), "OK");
    // Read at site 2 until it has site 1's write, then write: causally after it.
    let start = std::time::Instant::now();
    while topo.text(2, &["GET", "k"]) != "first" {
        assert!(start.elapsed() < CONVERGE, "site 2 never saw site 1's write");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(topo.text(2, &["SET", "k", "second"]), "OK");
    topo.converge(CONVERGE);
    for site in 1..=3u8 {
        assert_eq!(topo.text(site, &["GET", "k"]), "second");
    }
}
