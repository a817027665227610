//! The replication channels are locked (issue 13): a peer without a certificate of
//! the group's CA gets nothing — no hello, no state, no vote — and a peer that
//! connects and stays silent delays no real follower. Real processes, real KVM,
//! network namespaces; every VMM here has its own member certificate
//! (`ftvmm_tests::secure`) unless the test gives it another.
use ftvmm_tests::netns::Topology;
use ftvmm_tests::pair::{join, primary_args, serial, GUEST_CIDR, PRIMARY_LISTEN};
use ftvmm_tests::replica::Replicas;
use ftvmm_tests::status::STATUS;
use ftvmm_tests::vm::{in_netns, VmProcess};
use ftvmm_tests::{ftvmm_bin, new_certs, output_within, path_str, tls_dirs, TempDir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The join port's TLS handshake deadline (`vmm::host::tls::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A primary in host-a with member 1's certificate (`tls_dirs()[0]`) and a status endpoint.
fn primary(topo: &Topology) -> VmProcess {
    let tls = path_str(&tls_dirs()[0]).to_string();
    let mut p = VmProcess::spawn(topo, "host-a", &primary_args(&["--status", STATUS, "--tls-dir", &tls]));
    p.wait_for_line_in_stderr("waiting for its first follower", Duration::from_secs(15));
    p
}

/// A stock `ftvmm backup` in host-b with `security` flags; it must give up.
fn refused_backup(topo: &Topology, security: &[&str]) -> String {
    let mut cmd = topo.command("host-b", ftvmm_bin());
    cmd.args(["backup", "--primary", PRIMARY_LISTEN, "--guest-ip", GUEST_CIDR, "--connect-timeout-secs", "3"])
        .args(security)
        .env("FTVMM_LOG", "info");
    let out = output_within(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{security:?}: {err}");
    assert!(!err.contains("backup paired"), "{security:?}: {err}");
    assert!(!err.contains("booting guest"), "{security:?}: it never got a state to run: {err}");
    err
}

/// Connects to the primary's join port in clear, sends `hello` (nothing if empty),
/// and returns what it got until the primary closed the connection, and when.
fn plain_peer_reads(hello: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(PRIMARY_LISTEN).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let t0 = Instant::now();
    s.write_all(hello).expect("send");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    (got, t0.elapsed())
}

/// Accepts any server certificate: a stranger that wants to see what the primary
/// sends to a client whose own certificate is of another CA. It still checks the
/// handshake's signatures against that certificate (as rustls's own example of a
/// verifier that skips the chain does), so what it reads is the primary's real flight.
#[derive(Debug)]
struct TrustAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A socket that counts the bytes it receives.
struct Counting {
    socket: TcpStream,
    received: usize,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.received += n;
        Ok(n)
    }
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.socket.flush()
    }
}

/// Connects with a certificate of another CA (member dir `foreign`), trusting any
/// server; returns (plaintext bytes it could read, raw bytes received until the close).
fn stranger_reads(foreign: &std::path::Path) -> (usize, usize) {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(foreign.join("cert.pem"))
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(foreign.join("key.pem")).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything(provider)))
        .with_client_auth_cert(chain, key)
        .expect("client config");
    let name = rustls::pki_types::ServerName::try_from("ftvmm-member").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let socket = TcpStream::connect(PRIMARY_LISTEN).expect("connect to the primary");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut io = Counting { socket, received: 0 };
    let mut plaintext = 0;
    let mut buf = [0u8; 4096];
    // Drive the connection until the primary closes it, taking any plaintext it gives.
    loop {
        if conn.complete_io(&mut io).is_err() {
            break;
        }
        match conn.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => plaintext += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match conn.read_tls(&mut io) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if conn.process_new_packets().is_err() {
                        break;
                    }
                }
            },
            Err(_) => break,
        }
    }
    (plaintext, io.received)
}

#[test]
fn a_peer_without_the_groups_certificate_gets_nothing_and_a_member_pairs() {
    let _turn = serial();
    let topo = Topology::up();
    let mut p = primary(&topo);

    // A stock backup in clear: the primary waits for a TLS hello it never gets.
    let err = refused_backup(&topo, &["--insecure"]);
    assert!(err.contains("--insecure"), "it was warned at start: {err}");
    // A backup with a certificate of another group's CA: it refuses the primary's
    // certificate (and the primary would refuse its own).
    let other = TempDir::new("other-ca");
    let foreign = new_certs(&other.path("ca"), 1);
    let err = refused_backup(&topo, &["--tls-dir", path_str(&foreign[0])]);
    assert!(err.contains("TLS handshake failed"), "{err}");

    // At the byte level: a silent peer gets not a byte; one that speaks plaintext gets
    // one TLS alert; a stranger with another CA's certificate that trusts anything gets
    // the primary's handshake flight and an alert, and not a byte of plaintext (no
    // hello, no machine header, no state).
    let (silent, took) = in_netns(&topo, "host-b", || plain_peer_reads(b""));
    assert!(silent.is_empty(), "a silent peer got {} bytes", silent.len());
    assert!(took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100), "closed after {took:?}, before the deadline");
    assert!(took < HANDSHAKE_TIMEOUT * 3, "closed after {took:?}: the handshake deadline was not kept");
    let (alert, _) = in_netns(&topo, "host-b", || {
        plain_peer_reads(b"*1\r\n$4\r\nPING\r\n hello, I am a backup, send me the state\r\n")
    });
    assert!(alert.len() <= 7 && alert.first().is_none_or(|&b| b == 0x15), "plaintext peer got {alert:?}");
    let foreign_dir = foreign[0].clone();
    let (plaintext, raw) = in_netns(&topo, "host-b", move || stranger_reads(&foreign_dir));
    assert_eq!(plaintext, 0, "the stranger read plaintext");
    // The handshake flight (certificate and all) is about 1 KiB; a state is megabytes.
    assert!(raw < 8 * 1024, "the stranger received {raw} bytes");
    assert!(!p.stderr().contains("booting guest"), "no follower paired, so the guest has not booted");
    assert!(p.stderr().contains("did not pair"), "{}", p.stderr());

    // A member of the group pairs with the same primary.
    let _b = join(&topo, "host-b", PRIMARY_LISTEN, &[]);
    p.wait_for_line("kv-server: listening", Duration::from_secs(15));

    // The status endpoint has no secret of TLS either: no line of the primary's key,
    // nothing PEM (status, metrics).
    let key = std::fs::read_to_string(tls_dirs()[0].join("key.pem")).expect("key");
    for path in [&["status", STATUS][..], &["status", STATUS, "--metrics"][..]] {
        let out = topo.command("host-a", ftvmm_bin()).args(path).output().expect("ftvmm status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success() && text.len() > 100, "{path:?}: {text}");
        assert!(!text.contains("BEGIN") && !text.contains("PRIVATE"), "{path:?} shows PEM: {text}");
        for line in key.lines().filter(|l| !l.starts_with("-----") && l.len() > 8) {
            assert!(!text.contains(line), "{path:?} shows the private key: {text}");
        }
    }
}

#[test]
fn silent_peers_do_not_delay_a_real_followers_join() {
    let _turn = serial();
    let topo = Topology::up();
    let mut p = primary(&topo);
    const SILENT: usize = 8;
    // Silent peers in host-c connect first and hold their connections open...
    let silent: Vec<TcpStream> = in_netns(&topo, "host-c", || {
        (0..SILENT).map(|_| TcpStream::connect(PRIMARY_LISTEN).expect("connect")).collect()
    });
    // ...and a member starts at once. Paired one after another, each silent peer would
    // hold the join port for the handshake deadline; paired concurrently, none does.
    let t0 = Instant::now();
    let _b = join(&topo, "host-b", PRIMARY_LISTEN, &[]);
    let joined = t0.elapsed();
    p.wait_for_line("kv-server: listening", Duration::from_secs(15));
    // The silent ones are dropped at the deadline (the limit is crossed)...
    std::thread::sleep(HANDSHAKE_TIMEOUT + Duration::from_millis(500));
    let log = p.stderr();
    let timed_out = log.matches("TLS handshake did not finish").count();
    assert_eq!(timed_out, SILENT, "{log}");
    // ...after the member had paired.
    let paired_at = log.find("backup paired").expect("paired");
    let first_drop = log.find("TLS handshake did not finish").expect("dropped");
    assert!(paired_at < first_drop, "the member paired only after the silent peers were dropped ({joined:?}): {log}");
    assert!(joined < HANDSHAKE_TIMEOUT * SILENT as u32 / 2, "the join took {joined:?}");
    drop(silent);
}

#[test]
fn a_member_with_another_cas_certificate_gets_no_vote_and_no_state() {
    let _turn = serial();
    let topo = Topology::up();
    // Members 1 and 2 are of the group; member 3 has a certificate of another CA.
    let other = TempDir::new("rogue-ca");
    let rogue = new_certs(&other.path("ca"), 1);
    let rogue_flags: &[&str] = &["--tls-dir", path_str(&rogue[0])];
    let mut r = Replicas::launch(&topo, 3, &[], &[&[], &[], rogue_flags], &[]);
    let p = r.wait_primary(&topo, None, Duration::from_secs(30)).expect("members 1 and 2 elect a primary");
    assert!(p < 2, "the rogue member {} was elected", p + 1);
    r.members[p].wait_for_line("kv-server: listening", Duration::from_secs(20));
    r.wait_following(&topo, 1 - p, Duration::from_secs(20));
    // The rogue probes, stands for election and tries to join meanwhile; let it try.
    std::thread::sleep(Duration::from_secs(3));
    let rogue_log = r.members[2].stderr();
    for i in 0..2 {
        let log = r.members[i].stderr();
        assert!(!log.contains("voted for member 3"), "member {} voted for the rogue: {log}", i + 1);
        assert!(log.contains("peer port: refused a connection"), "member {} never refused the rogue: {log}", i + 1);
    }
    assert!(!rogue_log.contains("backup paired") && !rogue_log.contains("state transfer received"), "{rogue_log}");
    assert!(!rogue_log.contains("GOING LIVE") && !rogue_log.contains("boots the VM as the primary"), "{rogue_log}");
}
