//! A primary and a backup on two hosts; the primary dies; the backup goes live
//! with the same state and the same TCP connections. Real processes, `kill -9`.
use ftvmm_tests::client::{command, get_int, GUEST};
use ftvmm_tests::load::{assert_exact, ConnReport, Load};
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{self, serial};
use ftvmm_tests::vm::{in_netns, VmProcess};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn incr_on_the_same_connection_survives_the_primary_host_being_killed() {
    let _turn = serial();
    let topo = Topology::up();
    let mut pair = pair::start(&topo, &[], None);

    let (first, second, gap) = {
        let topo_ns = topo.ns("host-a");
        in_netns(&topo, "client", move || {
            let mut s = TcpStream::connect(GUEST).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            assert_eq!(command(&mut s, &mut r, "SET x 10"), "+OK");
            let first = command(&mut s, &mut r, "INCR x");
            // The whole primary host dies: every process in its namespace, kill -9.
            let killed = std::process::Command::new("sh")
                .args(["-c", &format!("ip netns pids {topo_ns} | xargs -r kill -9")])
                .status()
                .expect("kill");
            assert!(killed.success());
            let t0 = Instant::now();
            let second = command(&mut s, &mut r, "INCR x");
            (first, second, t0.elapsed())
        })
    };
    println!("client saw a {} ms gap across the failover", gap.as_millis());

    assert_eq!(first, ":11");
    assert_eq!(second, ":12", "the backup must carry on with the same state on the same connection");
    pair.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    assert!(pair.primary.wait(Duration::from_secs(5)).is_some(), "the primary was killed");
}

fn totals(reports: &[ConnReport]) -> (u64, u64, Duration) {
    let acked = reports.iter().map(|r| r.acked).sum();
    let in_flight = reports.iter().filter(|r| r.in_flight).count() as u64;
    let gap = reports.iter().map(|r| r.max_gap).max().unwrap_or_default();
    (acked, in_flight, gap)
}

#[test]
fn steady_incr_load_across_a_primary_kill_loses_no_acknowledged_write() {
    let _turn = serial();
    let topo = Topology::up();
    let mut pair = pair::start(&topo, &[], None);
    let load = Load::start(&topo, "counter", 8);

    std::thread::sleep(Duration::from_millis(1500));
    topo.kill_all("host-a");
    let killed_at = Instant::now();
    pair.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1500));
    let reports = load.stop();
    let final_value = in_netns(&topo, "client", || get_int("counter"));

    let (acked, in_flight, gap) = totals(&reports);
    println!(
        "acked {acked}, final {final_value}, in flight {in_flight}; longest client wait {} ms (kill at +0, wait ended +{} ms)",
        gap.as_millis(),
        reports.iter().filter_map(|r| r.max_gap_end).max().map_or(0, |t| t.saturating_duration_since(killed_at).as_millis())
    );
    assert_exact(&reports, final_value);
}

#[test]
fn killing_the_backup_under_load_leaves_the_primary_serving_unprotected() {
    let _turn = serial();
    let topo = Topology::up();
    let timeout_ms = 200;
    let mut pair = pair::start(&topo, &["--failover-timeout-ms", &timeout_ms.to_string()], None);
    let load = Load::start(&topo, "counter", 4);

    std::thread::sleep(Duration::from_millis(1000));
    topo.kill_all("host-b");
    pair.primary.wait_for_line_in_stderr("UNPROTECTED", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1000));
    let reports = load.stop();
    let info = in_netns(&topo, "client", || {
        let mut s = TcpStream::connect(GUEST).expect("connect");
        s.write_all(b"INFO replication\r\n").expect("send");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut s, &mut buf).expect("info");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });

    for r in &reports {
        assert!(r.error.is_none(), "a client connection failed: {r:?}");
    }
    let (acked, _, gap) = totals(&reports);
    println!("acked {acked}; longest client wait {} ms with a {timeout_ms} ms failover timeout", gap.as_millis());
    // Output waits for acks until the timeout declares the backup dead; then all is released.
    assert!(gap < Duration::from_millis(timeout_ms + 400), "the primary stalled {} ms", gap.as_millis());
    assert!(info.contains("ftvmm_protected:no"), "INFO must say the primary is unprotected: {info}");
}

#[test]
fn output_waits_for_the_backups_ack() {
    let _turn = serial();
    let topo = Topology::up();
    // Acks from the backup reach the primary 300 ms late; the log itself is not delayed.
    let delay = Duration::from_millis(300);
    let pair = pair::start(&topo, &["--failover-timeout-ms", "3000"], Some(&["--delay-up-ms", "300"]));

    let latencies: Vec<Duration> = in_netns(&topo, "client", || {
        let mut s = TcpStream::connect(GUEST).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        (0..5)
            .map(|_| {
                let t = Instant::now();
                assert!(command(&mut s, &mut r, "INCR held").starts_with(':'));
                t.elapsed()
            })
            .collect()
    });
    drop(pair);

    println!("request latencies with acks delayed by {delay:?}: {latencies:?}");
    for l in &latencies {
        assert!(*l >= delay, "a reply left the primary after {l:?}, before the backup's ack could arrive");
        assert!(*l < delay * 4, "a reply took {l:?}: more than the ack delay explains");
    }
}

/// Flips one byte a megabyte into the stream (past the boot state, inside the log),
/// with `security` ("--insecure", or none: TLS); returns the backup's stderr once it
/// stood down (exit 7) without going live, the primary serving on.
fn corrupt_log_frame(security: &[&str]) -> String {
    let _turn = serial();
    let topo = Topology::up();
    let mut extra = vec!["--failover-timeout-ms", "1000"];
    extra.extend_from_slice(security);
    let mut pair = pair::start(&topo, &extra, Some(&["--corrupt-down-after", "1000000"]));
    let load = Load::start(&topo, "c", 4);

    let status = pair.backup.wait(Duration::from_secs(60)).expect("the backup must stop on a corrupt stream");
    pair.primary.wait_for_line_in_stderr("UNPROTECTED", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let reports = load.stop();

    let err = pair.backup.stderr();
    assert_eq!(status.code(), Some(7), "stderr: {err}");
    assert!(!err.contains("GOING LIVE"), "a backup fed a corrupt stream must not go live: {err}");
    for r in &reports {
        assert!(r.error.is_none(), "the primary must keep serving: {r:?}");
    }
    err
}

#[test]
fn a_corrupt_log_frame_ends_the_channel_and_the_backup_stands_down() {
    // In clear, the log's own framing and checksums are all there is: the flipped byte
    // lands in a length prefix or a payload, and one of them catches it.
    let err = corrupt_log_frame(&["--insecure"]);
    assert!(err.contains("log stream undecodable"), "stderr: {err}");
}

#[test]
fn a_byte_changed_on_the_way_fails_tls_and_the_backup_stands_down() {
    // With TLS the record's authentication tag catches it before any framing sees it.
    let err = corrupt_log_frame(&[]);
    assert!(err.contains("TLS integrity check"), "stderr: {err}");
}

/// Flips a byte 5000 bytes into the state transfer, with `security` on both sides;
/// returns the backup's stderr once it refused the state (exit 7) without running it.
/// The state is that of a primary that has served writes (a first backup paired at
/// boot, then killed): a state at boot packs into fewer bytes than the handshake, so
/// the flipped byte would land in the log stream instead.
fn corrupt_state_transfer(security: &[&str]) -> String {
    let _turn = serial();
    let topo = Topology::up();
    let mut p = vec!["primary", "--listen", pair::PRIMARY_LISTEN, "--tap", "tap0", "--guest-ip", pair::GUEST_CIDR];
    p.extend_from_slice(security);
    let mut primary = VmProcess::spawn(&topo, "host-a", &p);
    let mut b = vec!["backup", "--primary", pair::PRIMARY_LISTEN, "--guest-ip", pair::GUEST_CIDR];
    b.extend_from_slice(security);
    let mut first = VmProcess::spawn(&topo, "host-b", &b);
    primary.wait_for_line("kv-server: listening", Duration::from_secs(15));
    first.wait_for_line_in_stderr("backup paired", Duration::from_secs(15));
    let load = Load::start(&topo, "state", 2);
    std::thread::sleep(Duration::from_millis(800));
    first.kill9();
    std::thread::sleep(Duration::from_millis(200));
    drop(load.stop());

    let _relay = pair::Relay::start(&topo, &["--corrupt-down-after", "5000"]);
    let mut b = vec!["backup", "--primary", pair::RELAY_LISTEN, "--guest-ip", pair::GUEST_CIDR];
    b.extend_from_slice(security);
    let mut backup = VmProcess::spawn(&topo, "host-b", &b);

    let status = backup.wait(Duration::from_secs(20)).expect("the backup must refuse the state");

    let err = backup.stderr();
    assert_eq!(status.code(), Some(7), "stderr: {err}\nprimary: {}", primary.stderr());
    assert!(err.contains("state transfer failed"), "stderr: {err}");
    assert!(!err.contains("booting guest"), "the backup must not run a corrupt state: {err}");
    primary.kill9();
    err
}

#[test]
fn a_corrupt_state_transfer_is_refused_before_the_backup_runs() {
    let err = corrupt_state_transfer(&["--insecure"]);
    assert!(err.contains("checksum"), "in clear, the state's checksum catches it: {err}");
}

#[test]
fn a_state_transfer_changed_on_the_way_fails_tls_before_the_backup_runs() {
    let err = corrupt_state_transfer(&[]);
    // rustls: "cannot decrypt peer's message" (a payload byte) or "received corrupt
    // message" (a record header byte).
    assert!(err.contains("decrypt") || err.contains("corrupt message"), "TLS catches it first: {err}");
}

#[test]
fn a_clean_primary_stop_stops_the_backup_without_it_going_live() {
    let _turn = serial();
    let topo = Topology::up();
    let mut pair = pair::start(&topo, &[], None);
    let info = in_netns(&topo, "client", || {
        let mut s = TcpStream::connect(GUEST).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        for _ in 0..50 {
            assert!(command(&mut s, &mut r, "INCR k").starts_with(':'));
        }
        s.write_all(b"INFO replication\r\n").expect("send");
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut r, &mut buf).expect("info");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    assert!(info.contains("ftvmm_protected:yes"), "a paired primary reports protection: {info}");

    assert!(pair.primary.terminate().success(), "primary: {}", pair.primary.stderr());
    let status = pair.backup.wait(Duration::from_secs(10)).expect("the backup stops when the primary does");

    let err = pair.backup.stderr();
    assert!(status.success(), "backup: {err}");
    assert!(err.contains("ended its log cleanly"), "{err}");
    assert!(!err.contains("GOING LIVE"), "a clean stop is not a failure: {err}");
    // The end record carries the primary's final state digest; the backup reached the same one.
    assert!(err.contains("EndOfLog(Shutdown)"), "{err}");
}

#[test]
fn a_clean_primary_stop_under_load_leaves_the_backup_in_the_same_final_state() {
    let _turn = serial();
    let topo = Topology::up();
    let mut pair = pair::start(&topo, &[], None);
    let load = Load::start(&topo, "busy", 4);
    std::thread::sleep(Duration::from_millis(700));

    // SIGTERM mid-load: the primary stops at a counted exit and ends the log there,
    // with its state digest; the backup must reach that very digest.
    assert!(pair.primary.terminate().success(), "{}", pair.primary.stderr());
    let status = pair.backup.wait(Duration::from_secs(15)).expect("the backup stops with the primary");
    let _ = load.stop();

    let err = pair.backup.stderr();
    assert!(status.success(), "the backup's final state must match the primary's: {err}");
    assert!(err.contains("EndOfLog(Shutdown)"), "{err}");
    assert!(!err.contains("GOING LIVE"), "{err}");
}

#[test]
fn a_client_that_backed_off_resends_soon_after_a_hung_primarys_backup_goes_live() {
    // A hung primary (SIGSTOP: no FIN, no RST, like a host that lost power) is declared
    // dead only after the failover timeout, 900 ms here. The client's request sent into
    // the hang is lost; Linux resends it by tail-loss probe at ~0.2 s and by timer at
    // ~0.4 s and ~0.8 s (lost too), then backs off to ~1.6 s. At go-live the new
    // primary's host sends an ICMP host unreachable per recent flow (host/nudge.rs); the
    // client takes its backoff back (RFC 6069) and resends at ~1.0 s, or at once if that
    // time has passed. Without the nudge the reply comes after ~1.6 s.
    let _turn = serial();
    let topo = Topology::up();
    let mut pair = pair::start(&topo, &["--failover-timeout-ms", "900"], None);
    let host_a = topo.ns("host-a");
    let (reply, waited) = in_netns(&topo, "client", move || {
        let mut s = TcpStream::connect(GUEST).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        for _ in 0..50 {
            // A steady round trip, as under load.
            assert_eq!(command(&mut s, &mut r, "SET x 10"), "+OK");
        }
        let stopped = std::process::Command::new("sh")
            .args(["-c", &format!("ip netns pids {host_a} | xargs -r kill -STOP")])
            .status()
            .expect("stop");
        assert!(stopped.success());
        let t0 = Instant::now();
        let reply = command(&mut s, &mut r, "INCR x");
        (reply, t0.elapsed())
    });
    topo.kill_all("host-a");
    println!("the request sent into the hang was answered after {} ms", waited.as_millis());
    assert_eq!(reply, ":11", "the new primary carries on with the same state on the same connection");
    pair.backup.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
    pair.backup.wait_for_line_in_stderr("told recent clients the outage is over", Duration::from_secs(5));
    assert!(
        waited < Duration::from_millis(1300),
        "the client waited {} ms: without the nudge it resends only at its backed-off timer (~1.6 s)",
        waited.as_millis()
    );
    assert!(pair.primary.wait(Duration::from_secs(5)).is_some(), "the hung primary was killed");
}

#[test]
fn with_mirrored_input_a_request_the_dead_primary_never_read_is_answered_at_go_live() {
    // The switch mirrors the guest's frames to every host (netns.sh mirror on); a backup
    // with --mirrored-input keeps them. Each round freezes the primary's host, sends a
    // request (only the mirror copy is ever read), and kills the host: the backup goes
    // live, injects the request and answers it within milliseconds, where without the
    // mirror the client resends it only at its retransmission timeout (>= 200 ms).
    // Three failovers in a chain on one connection (host-a -> host-b -> host-a -> host-b),
    // then one with the mirror off: the old behaviour, the client's timer.
    const ROUNDS: usize = 3;
    let _turn = serial();
    let topo = Topology::up();
    topo.mirror(true);
    let listen_b = ["--listen", pair::BACKUP_LISTEN, "--mirrored-input"];
    let listen_a = ["--listen", pair::PRIMARY_LISTEN, "--mirrored-input"];
    let pair = pair::start_with(&topo, &[], &listen_b, None);
    // The last one is the backup that goes live next; the others are kept so they are
    // stopped (if still running) only when the test ends.
    let mut alive = vec![pair.primary, pair.backup];
    let (mut s, mut r) = in_netns(&topo, "client", ftvmm_tests::client::connect);
    for _ in 0..20 {
        assert_eq!(command(&mut s, &mut r, "SET x 10"), "+OK");
    }
    let mut waits = Vec::new();
    let mut hosts = ["host-a", "host-b"];
    for round in 0..=ROUNDS {
        if round == ROUNDS {
            topo.mirror(false);
        }
        let (reply, waited) = ftvmm_tests::client::incr_into_a_dying_primary(&mut s, &mut r, &topo.ns(hosts[0]), "x");
        println!(
            "round {round}: the request the dead primary never read was answered {} ms after the kill",
            waited.as_millis()
        );
        assert_eq!(reply, format!(":{}", 11 + round), "round {round}: the same state, on the same connection");
        let live = alive.last_mut().expect("the backup");
        live.wait_for_line_in_stderr("GOING LIVE", Duration::from_secs(5));
        live.wait_for_line_in_stderr("did not log goes to the guest", Duration::from_secs(5));
        let err = live.stderr();
        if round < ROUNDS {
            assert!(!err.contains("injected=0"), "round {round}: the mirrored request was not injected:\n{err}");
            waits.push(waited);
            // A new backup on the dead host joins the live one, and the roles swap.
            let (joiner, to, flags) = if hosts[1] == "host-b" {
                ("host-a", pair::BACKUP_LISTEN, listen_a)
            } else {
                ("host-b", pair::PRIMARY_LISTEN, listen_b)
            };
            alive.push(pair::join(&topo, joiner, to, &flags));
            hosts.swap(0, 1);
        } else {
            assert!(
                waited > Duration::from_millis(120),
                "with the mirror off the client must resend by its own timer (>= 200 ms after sending); it \
                 waited only {} ms, so this test does not measure what it claims",
                waited.as_millis()
            );
        }
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    println!("median wait over {ROUNDS} mirrored failovers: {} ms", median.as_millis());
    assert!(
        median < Duration::from_millis(100),
        "with mirrored input the request must be answered well before the client's retransmission timeout \
         (~200 ms): median {} ms ({waits:?})",
        median.as_millis()
    );
}
