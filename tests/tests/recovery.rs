//! A follower that recovers from its own disk (`--data-dir`): killed with `kill -9`
//! and started again on the same directory, it restores its newest checkpoint,
//! replays its log from disk and asks the primary only for what came after —
//! from the backlog when it is there, by a transfer of the pages that differ when
//! it is not — and ends at the primary's final digest. Damaged files make it fall
//! back, never run from a bad state. Real processes in namespaces.
use ftvmm_tests::client;
use ftvmm_tests::load::{self, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{backup_args, primary_args, serial, BACKUP_LISTEN, GUEST_CIDR, PRIMARY_LISTEN};
use ftvmm_tests::status::{flag, wait_until_or, STATUS};
use ftvmm_tests::vm::VmProcess;
use ftvmm_tests::{ftvmm_bin, path_str, TempDir};
use std::path::Path;
use std::time::Duration;

/// How long the follower stays dead.
const DOWN: Duration = Duration::from_secs(5);

fn primary(topo: &Topology, extra: &[&str]) -> VmProcess {
    let mut args = primary_args(&["--status", STATUS]);
    args.extend_from_slice(extra);
    VmProcess::spawn(topo, "host-a", &args)
}

fn follower(topo: &Topology, dir: &Path) -> VmProcess {
    follower_every(topo, dir, "1")
}

fn follower_every(topo: &Topology, dir: &Path, checkpoint_secs: &str) -> VmProcess {
    let extra = ["--status", STATUS, "--data-dir", path_str(dir), "--checkpoint-secs", checkpoint_secs];
    VmProcess::spawn(topo, "host-b", &backup_args(PRIMARY_LISTEN, &extra))
}

/// A `key=value` field of the first log line containing `needle`.
fn field_of(log: &str, needle: &str, key: &str) -> u64 {
    let line = log.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"));
    let at = line.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len() + 2;
    let digits: String = line[at..].chars().skip_while(|c| *c == '"').take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("{key} in {line}"))
}

/// Every acknowledged INCR of `reports` on `key` is in the guest's value now.
fn assert_exact_now(topo: &Topology, key: &str, reports: &[load::ConnReport]) {
    let key = key.to_string();
    let value = ftvmm_tests::vm::in_netns(topo, "client", move || client::get_int(&key));
    load::assert_exact(reports, value);
}

/// Runs INCR load on `key` for `run` more, then checks that every acknowledged INCR,
/// of `reports` and of this run, is in the guest's value.
fn load_more_then_exact(topo: &Topology, key: &str, mut reports: Vec<load::ConnReport>, run: Duration) {
    let load = Load::start(topo, key, 2);
    std::thread::sleep(run);
    reports.extend(load.stop());
    assert_exact_now(topo, key, &reports);
}

/// What the new primary logs when a follower joined it.
const JOINED: &str = "new backup joined";

/// Starts the killed primary again on host-a, as a follower of its successor (the old
/// backup's `--listen`) keeping its log in `dir`, and waits until the successor took it in.
fn rejoin_old_primary(topo: &Topology, successor: &mut VmProcess, dir: &Path) -> VmProcess {
    let old = VmProcess::spawn(topo, "host-a", &backup_args(BACKUP_LISTEN, &["--data-dir", path_str(dir)]));
    successor.wait_for_line_in_stderr(JOINED, Duration::from_secs(15));
    old
}

/// Stops the successor cleanly: the old primary, its follower, must stop with it at
/// the end digest. `successor_log` is the successor's log, for the failure message.
fn stop_successor_then_old_primary(successor: &mut VmProcess, successor_log: &str, old: &mut VmProcess) {
    assert!(successor.terminate().success(), "{successor_log}");
    let status = old.wait(Duration::from_secs(30)).expect("the old primary stops with its successor");
    let err = old.stderr();
    assert!(status.success() && err.contains("EndOfLog(Shutdown)"), "the old primary must reach the end digest: {err}");
}

/// Boots a primary (with `primary_extra`) and a follower on `dir`; runs INCR load for
/// three seconds (checkpoints are taken every second), then kills the follower with
/// `kill -9` and stops the load. Returns the primary, the dead follower's log, and
/// the size of its first (full) checkpoint: what a full state transfer moves.
fn run_then_kill(topo: &Topology, dir: &Path, primary_extra: &[&str]) -> (VmProcess, Vec<load::ConnReport>, u64) {
    let mut p = primary(topo, primary_extra);
    let mut f = follower(topo, dir);
    p.wait_for_line("kv-server: listening", Duration::from_secs(15));
    f.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    let load = Load::start(topo, "disk", 2);
    std::thread::sleep(Duration::from_secs(3));
    f.wait_for_line_in_stderr("checkpoint taken", Duration::from_secs(5));
    f.kill9();
    let reports = load.stop();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let full = field_of(&f.stderr(), "a new history from exit", "bytes");
    (p, reports, full)
}

/// Restarts the follower on `dir` after [`DOWN`], waits until it is in sync again under
/// load, then stops the primary cleanly: the follower must replay to its final digest.
fn restart_and_finish(
    topo: &Topology,
    dir: &Path,
    mut p: VmProcess,
    reports: Vec<load::ConnReport>,
) -> (String, String) {
    std::thread::sleep(DOWN);
    let mut f = follower(topo, dir);
    let p_log = || format!("primary:\n{}\nrestarted follower:\n{}", p.stderr(), f.stderr());
    wait_until_or(
        topo,
        "host-a",
        Duration::from_secs(30),
        |s| flag(s, "protected") == Some(true) && s.contains("\"state\":\"in sync\""),
        p_log,
    );
    load_more_then_exact(topo, "disk", reports, Duration::from_secs(2));
    let primary_log = p.stderr();
    assert!(p.terminate().success(), "{primary_log}");
    let status = f.wait(Duration::from_secs(30)).expect("the follower stops with the primary");
    let follower_log = f.stderr();
    assert!(status.success(), "follower: {follower_log}");
    assert!(follower_log.contains("EndOfLog(Shutdown)"), "the follower must reach the end digest: {follower_log}");
    assert!(!follower_log.contains("GOING LIVE"), "{follower_log}");
    for line in primary_log.lines().chain(follower_log.lines()) {
        if ["data directory", "resumed", "joined", "backup paired", "checkpoint taken"].iter().any(|n| line.contains(n))
        {
            println!("{line}");
        }
    }
    (primary_log, follower_log)
}

#[test]
fn a_killed_follower_restarted_on_its_data_dir_resumes_from_the_backlog() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("data-dir-resume");
    let (p, reports, full) = run_then_kill(&topo, &dir.path("d"), &[]);
    let (primary_log, follower_log) = restart_and_finish(&topo, &dir.path("d"), p, reports);

    assert!(follower_log.contains("restored the checkpoint of exit"), "{follower_log}");
    assert!(follower_log.contains("resumed from the primary's backlog after exit"), "{follower_log}");
    let sent = field_of(&primary_log, "follower resumed from the backlog", "bytes");
    let raw = field_of(&primary_log, "follower resumed from the backlog", "raw_bytes");
    assert!(sent < raw, "the resumed log goes packed: {sent} bytes on the wire of {raw}");
    // A full transfer moves what a full checkpoint holds: the restarted follower's first.
    let full = full.max(field_of(&follower_log, "checkpoint taken", "bytes"));
    println!("resume sent {sent} bytes; a full transfer is {full} bytes ({:.1}%)", 100.0 * sent as f64 / full as f64);
    // Well under a full transfer. Not the 10 % bench-rejoin.sh reports: killed while its
    // disk-log thread trailed (the async default, on a loaded machine: once 18,000 exits
    // behind), the follower asks for more than the time it was down.
    assert!(sent * 4 < full, "resume sent {sent} bytes, a full transfer {full}");
    assert!(!primary_log.contains("state transfer of the pages that differ"), "{primary_log}");
}

#[test]
fn a_follower_restarted_past_the_backlog_gets_only_the_pages_that_differ() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("data-dir-diff");
    // 1 KiB of backlog: five seconds of ticks are more than that.
    let (p, reports, full) = run_then_kill(&topo, &dir.path("d"), &["--backlog-kib", "1"]);
    let (primary_log, follower_log) = restart_and_finish(&topo, &dir.path("d"), p, reports);

    let line = "state transfer of the pages that differ";
    let (pages, of, bytes) = (
        field_of(&primary_log, line, "pages"),
        field_of(&primary_log, line, "full_pages"),
        field_of(&primary_log, line, "bytes"),
    );
    let raw = field_of(&primary_log, line, "raw_bytes");
    // A full transfer sends every non-zero page the primary has now. The follower's first
    // checkpoint (taken when it joined, early) held fewer: against it, a diff of 281 of 394
    // pages (the guest's churn over the load and the five seconds down) failed once.
    let full = full.max(field_of(&follower_log, "checkpoint taken", "bytes")).max(of * 4096);
    println!("diff: {pages} of {of} pages, {bytes} bytes ({raw} before packing); a full transfer is {full} bytes");
    assert!(primary_log.contains("no longer in the backlog"), "{primary_log}");
    // Only the pages that differ move (how many is the guest's own churn: see README).
    assert!(pages < of, "{pages} of {of} pages sent");
    assert!(bytes < full, "{bytes} bytes sent, a full transfer {full}");
    // They go packed: the frames carry every page sent, the wire much less.
    assert!(raw >= pages * 4096 && bytes * 4 < raw, "{bytes} bytes on the wire for {raw} of frames ({pages} pages)");
}

#[test]
fn a_torn_checkpoint_and_a_torn_log_record_fall_back_and_still_end_exact() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("data-dir-torn");
    let d = dir.path("d");
    let (p, reports, _) = run_then_kill(&topo, &d, &[]);
    // A crash in the middle of a checkpoint that was renamed into place (a disk that
    // reordered writes): the newest checkpoint ends early. And the last log record is
    // cut in half.
    let mut files: Vec<_> = std::fs::read_dir(&d).expect("data dir").flatten().map(|e| e.path()).collect();
    files.sort();
    let newest = files.iter().rev().find(|f| f.extension().is_some_and(|e| e == "ftck")).expect("a checkpoint");
    let len = std::fs::metadata(newest).expect("checkpoint").len();
    std::fs::OpenOptions::new().write(true).open(newest).expect("open").set_len(len / 2).expect("cut");
    let segment = files.iter().rev().find(|f| f.extension().is_some_and(|e| e == "ftlog")).expect("a segment");
    let len = std::fs::metadata(segment).expect("segment").len();
    std::fs::OpenOptions::new().write(true).open(segment).expect("open").set_len(len - 3).expect("tear");

    let (_, follower_log) = restart_and_finish(&topo, &d, p, reports);
    assert!(follower_log.contains("checkpoint not usable, trying an older one"), "{follower_log}");
    assert!(follower_log.contains("restored the checkpoint of exit"), "{follower_log}");

    // The same directory under another memory size: refused, saying what to do.
    let out = topo
        .command("host-b", ftvmm_bin())
        .args(["backup", "--primary", PRIMARY_LISTEN, "--mem-mib", "128", "--data-dir", path_str(&d)])
        .env("FTVMM_TLS_DIR", &ftvmm_tests::tls_dirs()[1])
        .output()
        .expect("run ftvmm");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("another VM") && err.contains("memory size 64 MiB"), "{err}");
    assert!(err.contains("own --data-dir"), "{err}");
}

#[test]
fn the_log_on_disk_is_a_log_file_that_replay_reads_to_the_primarys_final_digest() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("data-dir-format");
    let d = dir.path("d");
    let mut p = primary(&topo, &[]);
    // No periodic checkpoint: the log from boot stays whole in its first segment.
    let mut f = follower_every(&topo, &d, "3600");
    p.wait_for_line("kv-server: listening", Duration::from_secs(15));
    f.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    let load = Load::start(&topo, "disk", 2);
    std::thread::sleep(Duration::from_secs(2));
    let reports = load.stop();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    assert!(p.terminate().success(), "{}", p.stderr());
    let status = f.wait(Duration::from_secs(30)).expect("the follower stops with the primary");
    assert!(status.success(), "{}", f.stderr());

    let segment = d.join(format!("log-{:020}.ftlog", 0));
    let out = ftvmm_tests::ftvmm(&["replay", "--log", path_str(&segment), "--guest-ip", GUEST_CIDR]);
    assert!(out.status.success(), "replay of the follower's disk log: {}", ftvmm_tests::stderr(&out));
}

#[test]
fn a_restarted_old_primary_rejoins_its_successor_by_a_diff_and_ends_at_its_digest() {
    let _turn = serial();
    let topo = Topology::up();
    let mut first = ftvmm_tests::pair::start_with(&topo, &[], &["--listen", BACKUP_LISTEN], None);
    let load = Load::start(&topo, "old", 2);
    std::thread::sleep(Duration::from_millis(800));
    // The primary's host dies; the backup takes over. The old primary comes back as a
    // follower of its successor: its freshly booted guest image is what it has in common.
    topo.kill_all("host-a");
    first.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    let dir = TempDir::new("data-dir-old-primary");
    let mut old = rejoin_old_primary(&topo, &mut first.backup, &dir.path("d"));
    std::thread::sleep(Duration::from_millis(800));
    assert_exact_now(&topo, "old", &load.stop());

    let new_primary = first.backup.stderr();
    let (pages, same, of) = (
        field_of(&new_primary, JOINED, "pages"),
        field_of(&new_primary, JOINED, "same_pages"),
        field_of(&new_primary, JOINED, "full_pages"),
    );
    println!("the old primary got {pages} of {of} pages; {same} it had already");
    // A pre-copy sends again the pages the guest wrote while it copied: at least every
    // page the joiner lacked, and never one it had in round 0 unless it changed.
    assert!(same > 0 && pages + same >= of, "{pages} + {same} < {of}");
    let joined = new_primary.lines().find(|l| l.contains(JOINED)).unwrap_or_default();
    assert!(joined.contains("pre-copy"), "a state transfer to a running VM is a pre-copy: {joined}");
    stop_successor_then_old_primary(&mut first.backup, &new_primary, &mut old);
}

// Issue 11: this failed about one run in two (a digest mismatch after the diff) when the
// old primary's disk log ended in the entry of its last exit: it hashed its pages there
// and then ran the guest one exit on before the state came. vmm::ft::recovery's unit
// test a_disk_log_ending_inside_an_exit_is_not_applied_when_a_state_follows keeps it.
#[test]
fn an_old_primary_restarted_on_its_own_data_dir_rejoins_its_successor_by_a_small_diff() {
    let _turn = serial();
    let topo = Topology::up();
    let dir = TempDir::new("data-dir-own-primary");
    let d = dir.path("d");
    // The primary keeps its own log and checkpoints, as a follower would.
    let mut p = primary(&topo, &["--data-dir", path_str(&d), "--checkpoint-secs", "1"]);
    let mut b = VmProcess::spawn(&topo, "host-b", &backup_args(PRIMARY_LISTEN, &["--listen", BACKUP_LISTEN]));
    p.wait_for_line("kv-server: listening", Duration::from_secs(15));
    b.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    let load = Load::start(&topo, "own", 2);
    std::thread::sleep(Duration::from_secs(2));
    let reports = load.stop();
    // Idle for two checkpoint intervals: its newest checkpoint is close to the VM it leaves.
    std::thread::sleep(Duration::from_secs(2));
    p.wait_for_line_in_stderr("checkpoint taken", Duration::from_secs(5));
    topo.kill_all("host-a");
    b.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    drop(p);
    // The old primary comes back as a follower of its successor, on its own directory.
    let mut old = rejoin_old_primary(&topo, &mut b, &d);
    load_more_then_exact(&topo, "own", reports, Duration::from_millis(800));

    let old_log = old.stderr();
    assert!(old_log.contains("data directory: restored the checkpoint of exit"), "{old_log}");
    let new_primary = b.stderr();
    let joined = new_primary.lines().find(|l| l.contains(JOINED)).unwrap_or_default();
    assert!(joined.contains("asked to resume"), "it asked to resume from its own log: {joined}");
    let (pages, of) = (field_of(&new_primary, JOINED, "pages"), field_of(&new_primary, JOINED, "full_pages"));
    println!("the old primary, restored from its own disk, got {pages} of {of} pages");
    // From its freshly booted image it gets about 80 % (the test above); from its own disk,
    // what the guest changed since its checkpoint.
    assert!(pages * 4 < of, "{pages} of {of} pages: it should hold most of them: {joined}");
    stop_successor_then_old_primary(&mut b, &new_primary, &mut old);
}

/// A replica group member (`ftvmm replica`) keeps its log and checkpoints in its
/// `--data-dir` too: killed with `kill -9` under INCR load and started again with the
/// same command, it restores its newest checkpoint, replays its disk log, and rejoins
/// the primary by a resume from its disk's end (or a diff of a few pages); it counts as
/// following only once it has, and every acknowledged INCR is kept.
#[test]
fn a_replica_member_killed_under_load_rejoins_from_its_own_disk() {
    use ftvmm_tests::replica::Replicas;
    let _turn = serial();
    let topo = Topology::up();
    let mut r = Replicas::start(&topo, 3, &["--replication", "sync", "--checkpoint-secs", "1"], &[]);
    let primary = r.primaries(&topo)[0];
    let victim = (0..3).find(|&i| i != primary).expect("a follower");
    let load = Load::start(&topo, "member", 2);
    std::thread::sleep(Duration::from_secs(3));
    r.members[victim].wait_for_line_in_stderr("checkpoint taken", Duration::from_secs(5));
    r.kill(&topo, victim);
    let reports = load.stop();
    std::thread::sleep(Duration::from_secs(2));
    r.restart(&topo, victim);
    r.wait_following(&topo, victim, Duration::from_secs(20));
    load_more_then_exact(&topo, "member", reports, Duration::from_secs(2));
    assert_eq!(r.primaries(&topo), vec![primary], "the primary stays the primary");

    let back = r.members[victim].stderr();
    assert!(back.contains("data directory: restored the checkpoint of exit"), "{back}");
    let position = field_of(&back, "data directory: restored the checkpoint", "position");
    let primary_log = r.members[primary].stderr();
    // What a whole state transfer moved: the primary's non-zero pages when the members
    // joined, at boot (fewer than now: a bound on the low side).
    let full = 4096 * field_of(&primary_log, "new backup joined: state sent", "full_pages");
    if back.contains("resumed from the primary's backlog after exit") {
        // The resume starts where its disk's log ends: nothing before it is sent again.
        let from = field_of(&primary_log, "follower resumed from the backlog", "from");
        assert_eq!(from, position, "it resumes after its disk's log");
        // The log since then: the load's last moments its disk missed, the time it was
        // down and restarting (idle), so it grows with how slow the host is (29-30 KB in
        // two runs here, 227 KB in one): bounded by the boot-time state, not tightly.
        let sent = field_of(&primary_log, "follower resumed from the backlog", "bytes");
        println!("resume sent {sent} bytes after exit {from}; a whole state transfer at boot was {full} bytes");
        assert!(sent < full, "resume sent {sent} bytes, a whole state transfer at boot {full}");
    } else {
        let line = "new backup joined: a follower asked to resume";
        let (pages, of) = (field_of(&primary_log, line, "pages"), field_of(&primary_log, line, "full_pages"));
        println!("the member got {pages} of {of} pages");
        assert!(pages * 4 < of, "{pages} of {of} pages: it should hold most of them");
    }
}
