use super::certs::{self, CertsError};
use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temp dir, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ftvmm-tls-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A group of `n` members (a CA and its certificates in a temp dir); returns the dir and each member's Security.
pub(crate) fn group(n: usize) -> (TempDir, Vec<Security>) {
    let dir = TempDir::new();
    let names = certs::member_names(&n.to_string()).expect("names");
    let dirs = certs::init(&dir.0, &names).expect("init");
    let ids = dirs.iter().map(|d| Security::from_dir(d).expect("load")).collect();
    (dir, ids)
}

/// Connects `client` to `server` over loopback; returns both ends' results.
fn pair(server: &Security, client: &Security) -> (Result<Channel, TlsError>, Result<Channel, TlsError>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = client.clone();
    let c = std::thread::spawn(move || {
        let socket = TcpStream::connect(addr).expect("connect");
        client.client(socket, HANDSHAKE_TIMEOUT)
    });
    let (socket, _) = listener.accept().expect("accept");
    let s = server.server(socket, HANDSHAKE_TIMEOUT);
    (s, c.join().expect("client thread"))
}

#[test]
fn members_of_one_group_talk_and_one_thread_reads_while_another_writes() {
    let (_dir, ids) = group(2);
    let (s, c) = pair(&ids[0], &ids[1]);
    let (server, client) = (s.expect("server"), c.expect("client"));
    assert!(server.is_tls() && client.is_tls());
    // The server streams 4 MiB while its reader thread takes the client's acks, as a
    // primary's vCPU and ack-rx do; the client reads and answers on one thread.
    let reader = server.try_clone().expect("clone");
    let acks = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = [0u8; 8];
        while (&reader).read_exact(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    let writer = std::thread::spawn(move || {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            (&server).write_all(&chunk).expect("write");
        }
        server.shutdown(Shutdown::Write).expect("close_notify");
        server
    });
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = (&client).read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 7));
        total += n;
        (&client).write_all(&[1u8; 8]).expect("ack");
    }
    assert_eq!(total, 4 << 20);
    client.shutdown(Shutdown::Both).expect("shutdown");
    let server = writer.join().expect("writer");
    let got = acks.join().expect("acks");
    assert!(got > 0, "the acks arrived while the writer wrote");
    drop(server);
}

#[test]
fn a_shutdown_ends_a_blocked_read_at_once_and_a_read_timeout_is_honoured() {
    let (_dir, ids) = group(2);
    let (s, c) = pair(&ids[0], &ids[1]);
    let (server, _client) = (s.expect("server"), c.expect("client"));
    server.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let t0 = std::time::Instant::now();
    let err = (&server).read(&mut [0u8; 16]).expect_err("nothing to read");
    assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
    assert!(t0.elapsed() >= Duration::from_millis(200) && t0.elapsed() < Duration::from_secs(2));
    server.set_read_timeout(None).expect("timeout");
    let reader = server.try_clone().expect("clone");
    let blocked = std::thread::spawn(move || (&reader).read(&mut [0u8; 16]));
    std::thread::sleep(Duration::from_millis(100));
    let t0 = std::time::Instant::now();
    server.shutdown(Shutdown::Both).expect("shutdown");
    let read = blocked.join().expect("reader");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(t0.elapsed() < Duration::from_millis(500));
}

#[test]
fn a_member_of_another_group_is_refused_and_gets_no_plaintext() {
    let (_a, ours) = group(1);
    let (_b, theirs) = group(1);
    let (s, c) = pair(&ours[0], &theirs[0]);
    // The client checks the server's certificate first and refuses it; the server
    // never completes a handshake with it.
    assert!(matches!(c, Err(TlsError::Rejected(_))), "{:?}", c.err());
    assert!(s.is_err(), "the server refused the stranger");
}

#[test]
fn a_client_without_a_certificate_is_refused_by_the_server() {
    let (dir, ours) = group(1);
    // A client that trusts the group's CA but has no certificate of its own.
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(dir.0.join(CA_FILE)).expect("ca") {
        roots.add(ca.expect("ca")).expect("root");
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let stranger = Security::Tls(Arc::new(Identity {
        client: Arc::new(config),
        server: match &ours[0] {
            Security::Tls(id) => id.server.clone(),
            Security::Insecure => unreachable!(),
        },
        dir: dir.0.clone(),
    }));
    let (s, c) = pair(&ours[0], &stranger);
    assert!(matches!(s, Err(TlsError::Rejected(_))), "{:?}", s.err());
    // Its side of the handshake may finish; its first read gets the alert, no plaintext.
    if let Ok(c) = c {
        c.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        let mut buf = [0u8; 64];
        let r = (&c).read(&mut buf);
        assert!(matches!(r, Ok(0) | Err(_)), "no plaintext reaches it: {r:?}");
    }
}

#[test]
fn a_silent_or_trickling_peer_times_out_at_the_handshake_deadline() {
    let (_dir, ids) = group(1);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let timeout = Duration::from_millis(300);
    // Silent.
    let _silent = TcpStream::connect(addr).expect("connect");
    let (socket, _) = listener.accept().expect("accept");
    let t0 = std::time::Instant::now();
    let r = ids[0].server(socket, timeout);
    assert!(matches!(r, Err(TlsError::Timeout(t)) if t == timeout), "{:?}", r.err());
    assert!(t0.elapsed() >= timeout && t0.elapsed() < timeout * 3, "{:?}", t0.elapsed());
    // Trickling: a byte of a ClientHello every 50 ms never finishes, and the deadline
    // is for the whole handshake, not each read.
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        for b in [0x16u8, 3, 1, 0, 200].iter().cycle().take(40) {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (socket, _) = listener.accept().expect("accept");
    let t0 = std::time::Instant::now();
    let r = ids[0].server(socket, timeout);
    assert!(matches!(r, Err(TlsError::Timeout(_))), "{:?}", r.err());
    assert!(t0.elapsed() < timeout * 3, "{:?}", t0.elapsed());
    let _ = trickle.join();
}

#[test]
fn plaintext_to_a_tls_port_gets_only_a_tls_alert_back() {
    let (_dir, ids) = group(1);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"hello, I am a backup; send me the state\r\n").expect("send");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    let (socket, _) = listener.accept().expect("accept");
    assert!(ids[0].server(socket, HANDSHAKE_TIMEOUT).is_err());
    let got = peer.join().expect("peer");
    // At most one alert record: content type 21, nothing else.
    assert!(got.is_empty() || (got[0] == 0x15 && got.len() <= 7), "{got:?}");
}

#[test]
fn member_files_that_do_not_fit_together_are_refused_at_start() {
    let (a, _) = group(1);
    let (b, _) = group(1);
    // member-1's certificate and key from group A, with group B's CA.
    std::fs::copy(b.0.join(CA_FILE), a.0.join("member-1").join(CA_FILE)).expect("copy");
    let e = Security::from_dir(&a.0.join("member-1")).expect_err("refused");
    assert!(matches!(e, TlsError::NotSigned { .. }), "{e}");
    let e = Security::from_dir(&a.0.join("nobody")).expect_err("refused");
    assert!(e.to_string().contains("certs init"), "{e}");
    std::fs::write(a.0.join("member-1").join(KEY_FILE), "not a key").expect("write");
    let e = Security::from_dir(&a.0.join("member-1")).expect_err("refused");
    assert!(matches!(e, TlsError::Pem { .. } | TlsError::NotSigned { .. }), "{e}");
}

#[test]
fn certs_init_refuses_to_replace_a_ca_and_checks_member_names_to_their_limits() {
    let (dir, _) = group(1);
    assert!(matches!(certs::init(&dir.0, &["x".into()]), Err(CertsError::Exists(_))));
    assert_eq!(certs::member_names(&certs::MAX_MEMBERS.to_string()).expect("max").len(), certs::MAX_MEMBERS);
    assert!(certs::member_names(&(certs::MAX_MEMBERS + 1).to_string()).is_err());
    assert!(certs::member_names("0").is_err());
    assert_eq!(certs::member_names("a, b-2,c").expect("names"), ["a", "b-2", "c"]);
    assert!(certs::member_names(&"a".repeat(certs::MAX_NAME)).is_ok());
    assert!(matches!(certs::member_names(&"a".repeat(certs::MAX_NAME + 1)), Err(CertsError::Name(_))));
    for bad in ["A", "a_b", "-a", "a-", "", "a/b", "a,,b"] {
        assert!(certs::member_names(bad).is_err(), "{bad:?}");
    }
    assert!(matches!(certs::member_names("a,b,a"), Err(CertsError::Duplicate(_))));
    let many: Vec<String> = (0..=certs::MAX_MEMBERS).map(|i| format!("m{i}")).collect();
    assert!(certs::member_names(&many.join(",")).is_err());
}

#[test]
fn writes_from_two_threads_arrive_whole_each_in_its_writers_order() {
    let (_dir, ids) = group(2);
    let (s, c) = pair(&ids[0], &ids[1]);
    let (server, client) = (s.expect("server"), c.expect("client"));
    const EACH: u32 = 2000;
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let ch = server.try_clone().expect("clone");
            std::thread::spawn(move || {
                for i in 0..EACH {
                    // A message: writer, sequence number, and a body that says both.
                    let mut m = vec![w];
                    m.extend_from_slice(&i.to_le_bytes());
                    m.extend(std::iter::repeat_n(w ^ (i as u8), 300));
                    (&ch).write_all(&m).expect("write");
                }
            })
        })
        .collect();
    let mut got = [0u32; 2];
    let mut msg = [0u8; 305];
    for _ in 0..2 * EACH {
        (&client).read_exact(&mut msg).expect("read");
        let (w, i) = (msg[0], u32::from_le_bytes(msg[1..5].try_into().expect("4 bytes")));
        assert!(w < 2, "a torn message: {:?}", &msg[..8]);
        assert_eq!(i, got[w as usize], "writer {w}'s messages out of order");
        assert!(msg[5..].iter().all(|&b| b == w ^ (i as u8)), "a message mixed with another");
        got[w as usize] += 1;
    }
    for t in writers {
        t.join().expect("writer");
    }
}
