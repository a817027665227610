//! Stock Redis clients talk to the guest's key-value server over real TCP,
//! through a TAP device, in namespaces the test makes.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::vm::{in_netns, VmProcess};
use ftvmm_tests::{ftvmm, ok_digest, path_str, TempDir};
use redis::Commands;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const GUEST: &str = "10.77.0.10/24";

fn boot_server(topo: &Topology, extra: &[&str]) -> VmProcess {
    let mut args = vec!["run", "--tap", "tap0", "--guest-ip", GUEST, "--gateway", Topology::HOST_A_IP];
    args.extend_from_slice(extra);
    let mut vm = VmProcess::spawn(topo, "host-a", &args);
    vm.wait_for_line("kv-server: listening", Duration::from_secs(10));
    vm
}

fn redis_url() -> String {
    format!("redis://{}:6379/", Topology::GUEST_IP)
}

fn connect() -> redis::Connection {
    let client = redis::Client::open(redis_url()).expect("url");
    client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect to the guest")
}

#[test]
fn set_get_and_incr_round_trip_over_tcp() {
    let topo = Topology::up();
    let _vm = boot_server(&topo, &[]);
    let (got, n1, n2) = in_netns(&topo, "client", || {
        let mut c = connect();
        let _: () = c.set("greeting", "hello from the client").expect("SET");
        let got: String = c.get("greeting").expect("GET");
        let n1: i64 = c.incr("x", 1).expect("INCR");
        let n2: i64 = c.incr("x", 1).expect("INCR");
        (got, n1, n2)
    });
    assert_eq!(got, "hello from the client");
    assert_eq!((n1, n2), (1, 2));
}

#[test]
fn a_thousand_pipelined_commands_all_get_their_replies_in_order() {
    let topo = Topology::up();
    let _vm = boot_server(&topo, &[]);
    let replies: Vec<i64> = in_netns(&topo, "client", || {
        let mut c = connect();
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            pipe.incr("counter", 1);
        }
        pipe.query(&mut c).expect("pipeline")
    });
    assert_eq!(replies, (1..=1000).collect::<Vec<i64>>());
}

#[test]
fn sixty_four_concurrent_connections_incr_a_shared_key_exactly() {
    let topo = Topology::up();
    let _vm = boot_server(&topo, &[]);
    let per_conn = 50;
    let final_value: i64 = in_netns(&topo, "client", move || {
        let workers: Vec<_> = (0..64)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = connect();
                    for _ in 0..per_conn {
                        let _: i64 = c.incr("shared", 1).expect("INCR");
                    }
                    c
                })
            })
            .collect();
        // Keep every connection open until all are done, so all 64 are concurrent.
        let conns: Vec<_> = workers.into_iter().map(|w| w.join().expect("worker")).collect();
        let mut c = connect();
        let v = c.get("shared").expect("GET");
        drop(conns);
        v
    });
    assert_eq!(final_value, 64 * per_conn);
}

#[test]
fn garbage_gets_an_error_and_is_closed_while_others_keep_being_served() {
    let topo = Topology::up();
    let _vm = boot_server(&topo, &[]);
    let (reply, closed, pong) = in_netns(&topo, "client", || {
        let mut good = connect();
        let mut bad = TcpStream::connect((Topology::GUEST_IP, 6379)).expect("connect");
        bad.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        bad.write_all(b"*2\r\n$3\r\nGET\r\n$-77\r\nxx\r\n").expect("send garbage");
        let mut reply = Vec::new();
        let closed = bad.read_to_end(&mut reply).is_ok();
        let pong: String = redis::cmd("PING").query(&mut good).expect("PING on the good connection");
        (String::from_utf8_lossy(&reply).into_owned(), closed, pong)
    });
    assert!(reply.starts_with("-ERR Protocol error"), "reply: {reply:?}");
    assert!(closed, "the server must close a connection that sent garbage");
    assert_eq!(pong, "PONG");
}

#[test]
fn recorded_network_session_replays_to_the_same_digest_without_a_tap() {
    let topo = Topology::up();
    let dir = TempDir::new("netreplay");
    let log = dir.path("net.ftlog");
    let mut vm =
        VmProcess::spawn(&topo, "host-a", &["record", "--log", path_str(&log), "--tap", "tap0", "--guest-ip", GUEST]);
    vm.wait_for_line("kv-server: listening", Duration::from_secs(10));
    in_netns(&topo, "client", || {
        let mut c = connect();
        for i in 0..200 {
            let _: () = c.set(format!("k{i}"), i).expect("SET");
            let _: i64 = c.incr("n", 1).expect("INCR");
        }
    });
    assert!(vm.terminate().success(), "record must stop cleanly on SIGTERM: {}", vm.stderr());
    let recorded = vm
        .stderr()
        .lines()
        .find_map(|l| l.split("state digest at exit ").nth(1).map(str::to_owned))
        .expect("record logs its final digest");
    let stop = recorded.split(':').next().expect("index").to_owned();

    let replayed =
        ok_digest(&ftvmm(&["replay", "--log", path_str(&log), "--guest-ip", GUEST, "--stop-at-exit", &stop]));
    assert_eq!(replayed, format!("state digest at exit {recorded}"));
}
