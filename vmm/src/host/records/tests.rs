use super::*;
use crate::host::arbiter;
use crate::host::register;

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ftvmm-records-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn files_and_keys_are_told_apart_by_name() {
    assert_eq!(classify_file("10.0.0.1-ab12-epoch-3"), Some(("10.0.0.1-ab12".into(), Item::Claim(3))));
    assert_eq!(classify_file("a-epoch-1-epoch-2"), Some(("a-epoch-1".into(), Item::Claim(2))));
    assert_eq!(classify_file("g-witness"), Some(("g".into(), Item::Witness)));
    assert_eq!(classify_file("g-witness.lock"), Some(("g".into(), Item::Aside)));
    assert_eq!(classify_file("notes.txt"), None);
    assert_eq!(classify_file("g-epoch-x"), None);
    assert_eq!(classify_key("/ftvmm/g/epoch/00000000000000000007"), Some(("g".into(), Item::Claim(7))));
    assert_eq!(classify_key("/ftvmm/g/witness"), Some(("g".into(), Item::Witness)));
    assert_eq!(classify_key("/ftvmm/g/other"), None);
    assert_eq!(classify_key("/elsewhere/g/witness"), None);
}

#[test]
fn a_listing_shows_each_group_its_latest_claim_and_witness_and_clear_removes_only_the_named_group() {
    let d = dir("list");
    std::fs::create_dir_all(&d).expect("dir");
    let spec = format!("file:{}", d.display());
    let arb = arbiter::from_spec(&spec).expect("arbiter");
    assert!(arb.claim("old-1", 1, "backup pid 7 on host-b").expect("claim"));
    assert!(arb.claim("old-1", 2, "primary pid 9 on host-a").expect("claim"));
    assert!(arb.claim("new-2", 1, "backup pid 8 on host-b").expect("claim"));
    let reg = register::from_spec(&spec, "new-2").expect("register");
    assert!(reg.swap(0, "epoch 4\nvoted_for 2\nfloor 4 9\nupdated_at_unix 100\n").expect("swap"));
    std::fs::write(d.join("unrelated.txt"), "x").expect("write");

    let location = Location::parse(&spec).expect("location");
    let listing = list(&location).expect("list");
    assert_eq!(listing.keys().collect::<Vec<_>>(), ["new-2", "old-1"]);
    let old = &listing["old-1"];
    assert_eq!(old.claims.iter().map(|c| c.epoch).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(old.claims[1].holder, "primary pid 9 on host-a");
    assert!(old.claims[1].at_unix.is_some());
    assert_eq!(
        listing["new-2"].witness,
        Some(WitnessRecord { epoch: Some(4), voted_for: Some(2), at_unix: Some(100) })
    );
    let table = render(&listing, 160);
    assert!(table.contains("old-1") && table.contains("epochs 1-2") && table.contains("voted for member 2"), "{table}");
    assert!(table.contains("1m00s"), "the witness record's age: {table}");

    let err = clear(&location, &Which::Group("nope".into())).expect_err("unknown group").to_string();
    assert!(err.contains("new-2, old-1"), "{err}");
    let removed = clear(&location, &Which::Group("old-1".into())).expect("clear");
    let words = describe_removed(&removed, &spec);
    assert!(words.contains("removed group old-1: 2 arbiter claims (epochs 1-2)"), "{words}");
    let after = list(&location).expect("list");
    assert_eq!(after.keys().collect::<Vec<_>>(), ["new-2"], "only old-1 went");
    assert_eq!(arb.latest_claim("old-1").expect("scan"), None);
    let all = clear(&location, &Which::All).expect("clear all");
    assert!(describe_removed(&all, &spec).contains("1 arbiter claim (epoch 1) and its witness record"));
    assert!(list(&location).expect("list").is_empty());
    assert!(d.join("unrelated.txt").exists(), "files that are not records stay");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn a_missing_directory_or_an_unreachable_etcd_is_a_clear_error() {
    let d = dir("missing");
    let err = list(&Location::File(d.clone())).expect_err("missing").to_string();
    assert!(err.contains("does not exist") && err.contains("mounted"), "{err}");
    assert!(!d.exists(), "listing does not create the directory");
    let etcd = Location::parse("etcd:http://127.0.0.1:9").expect("location");
    let err = list(&etcd).expect_err("unreachable").to_string();
    assert!(err.contains("no etcd endpoint answered") && err.contains("127.0.0.1:9"), "{err}");
    assert!(clear(&etcd, &Which::All).is_err());
}

#[test]
fn ages_read_like_a_person_would_write_them() {
    assert_eq!(age(None, 10), "?");
    assert_eq!(age(Some(10), 5), "0s", "a clock behind the record is not a negative age");
    assert_eq!(age(Some(0), 59), "59s");
    assert_eq!(age(Some(0), 185), "3m05s");
    assert_eq!(age(Some(0), 7260), "2h01m");
    assert_eq!(age(Some(0), 90_000), "1d01h");
}
