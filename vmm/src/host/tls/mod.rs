//! Mutually authenticated, encrypted replication channels: TLS 1.3 (rustls,
//! ring) with client certificates, both sides checking that the peer's
//! certificate is signed by the group's CA ([`certs`] makes one, with a
//! certificate per member).
//!
//! Every replication connection goes through a [`Security`]: the log stream and
//! its acks, state transfer, joins and resumes, and the election's peer port.
//! The accepting side is the TLS server, the connecting side the client; each
//! presents its member certificate, and neither sends a byte of its own protocol
//! (no hello, no machine header, no state) before the handshake has verified the
//! other's. A handshake must finish within a deadline given by the caller
//! ([`HANDSHAKE_TIMEOUT`] at the join ports), however the peer trickles its bytes.
//!
//! ## One connection, two threads: [`Channel`]
//!
//! The primary's side of the log stream is written by the vCPU thread and read by
//! `ack-rx`, and `lose` shuts it down from a third, while a write may be blocked.
//! A plain `TcpStream` allows that with `try_clone`; a rustls connection is one
//! state machine that cannot be cloned. So a [`Channel`] is one shared object,
//! and its clones are handles to it:
//!
//! ```text
//!   vcpu0 / log-tx (writers)        ack-rx (reader)                 lose / finish
//!     |                               |                                |
//!     | lock outbox (writers only)    | lock inbox (readers only)      | shutdown(socket):
//!     |  lock conn: encrypt the batch |  lock conn: plaintext ready?   |   no lock; a recv
//!     |    into the outbox; unlock    |    take it; inbox has bytes?   |   blocked in the
//!     |  send(MSG_DONTWAIT) the       |    decrypt them; unlock        |   kernel returns
//!     |    outbox; poll(POLLOUT) if   |  else recv() into the inbox:   |   at once
//!     |    the socket is full         |    blocking, SO_RCVTIMEO, no   |
//!     | unlock outbox                 |    conn lock held              |
//!     v                               v                                v
//!   +----------------------------------------------------------------------+
//!   | Channel (Arc): Mutex<rustls::Connection>, Mutex<outbox>,             |
//!   |   Mutex<inbox: 64 KiB>, TcpStream (blocking; writes pass DONTWAIT)   |
//!   +----------------------------------------------------------------------+
//! ```
//! The connection's lock is held only for work in memory (sealing and opening
//! records), never across a system call: a reader waiting for acks blocks in
//! `recv` holding only its inbox, and a writer sends (or waits for room) holding
//! only the outbox, which keeps records in the order they were sealed. So the
//! vCPU's write never waits for the ack reader, and the ack reader never waits for
//! the vCPU's `send` (which on a veth runs the receiving side's network stack too:
//! with the send under the connection's lock, `ack-rx` showed in a profile waiting
//! for that lock). A read costs one `recv`, as in clear (up to 64 KiB: a log batch,
//! not rustls's 4 KiB), and the socket's own read timeout applies. The vCPU's batch
//! is sealed and sent on its own thread, as in clear: no thread hop per record.
//! With `--insecure` a [`Channel`] is the plain socket, shared the same way.
pub mod certs;
mod channel;

pub use channel::Channel;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a peer connecting to a join port has to finish its TLS handshake; the
/// handshake runs on the connection's own thread, so a silent or slow peer delays
/// nobody else.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// The name every member's certificate carries, and every member checks a peer's
/// certificate for: members are found by address, and being a member is being
/// certified by the group's CA.
pub const MEMBER_NAME: &str = "ftvmm-member";
/// The files of a member's `--tls-dir`.
pub const CA_FILE: &str = "ca.pem";
/// This member's certificate (signed by the CA).
pub const CERT_FILE: &str = "cert.pem";
/// This member's private key.
pub const KEY_FILE: &str = "key.pem";

/// What went wrong setting up or running TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-dir: cannot read {path}: {source} (make the files with `ftvmm certs init DIR`)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--tls-dir: {path} holds no usable {what} (expected PEM as `ftvmm certs init` writes it)")]
    Pem { path: PathBuf, what: &'static str },
    #[error("--tls-dir: {0} (the member's files do not fit together: make them again with `ftvmm certs init`)")]
    Config(String),
    #[error("--tls-dir {dir}: {cert} is not signed by {ca}: {why} (copy the member directory that `ftvmm certs init` made, whole)")]
    NotSigned { dir: PathBuf, cert: &'static str, ca: &'static str, why: String },
    #[error("the TLS handshake did not finish within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the peer closed the connection during the TLS handshake (a peer without a certificate of this group, or running --insecure?)")]
    Closed,
    #[error("the TLS handshake failed: {0} (is the peer's certificate signed by this group's CA? both sides need --tls-dir from one `ftvmm certs init`)")]
    Rejected(rustls::Error),
    #[error("the TLS handshake failed: {0}")]
    Io(#[from] std::io::Error),
}

/// How this process protects its replication connections.
#[derive(Clone)]
pub enum Security {
    /// In clear, unauthenticated (`--insecure`).
    Insecure,
    /// TLS 1.3 with this member's identity.
    Tls(Arc<Identity>),
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Security::Insecure => write!(f, "insecure"),
            Security::Tls(id) => write!(f, "tls({})", id.dir.display()),
        }
    }
}

/// A member's certificate and key, with the group's CA to check peers against.
pub struct Identity {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    dir: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Security {
    /// Loads a member's `--tls-dir` ([`CA_FILE`], [`CERT_FILE`], [`KEY_FILE`]) and
    /// checks that its certificate is signed by its CA.
    pub fn from_dir(dir: &Path) -> Result<Security, TlsError> {
        let read = |name: &'static str| {
            let path = dir.join(name);
            std::fs::read(&path).map(|b| (path.clone(), b)).map_err(|source| TlsError::Read { path, source })
        };
        let (ca_path, ca_pem) = read(CA_FILE)?;
        let (cert_path, cert_pem) = read(CERT_FILE)?;
        let (key_path, key_pem) = read(KEY_FILE)?;
        let pem = |path: &PathBuf, what| TlsError::Pem { path: path.clone(), what };
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| pem(&ca_path, "certificate"))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| pem(&cert_path, "certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| pem(&key_path, "private key"))?;
        if cas.is_empty() {
            return Err(pem(&ca_path, "certificate"));
        }
        let Some(leaf) = chain.first().cloned() else { return Err(pem(&cert_path, "certificate")) };
        let mut roots = RootCertStore::empty();
        for ca in cas {
            roots.add(ca).map_err(|e| TlsError::Config(format!("{}: {e}", ca_path.display())))?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let config = |e: rustls::Error| TlsError::Config(e.to_string());
        // A member certificate that its own CA does not sign would be refused by every
        // peer: say so now, at start, rather than at every connection.
        let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let name = ServerName::try_from(MEMBER_NAME).map_err(|e| TlsError::Config(e.to_string()))?;
        server_verifier
            .verify_server_cert(&leaf, &chain[1..], &name, &[], UnixTime::now())
            .map_err(|e| TlsError::NotSigned { dir: dir.into(), cert: CERT_FILE, ca: CA_FILE, why: e.to_string() })?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(config)?;
        // Every connection is a fresh handshake: no session tickets to send or keep.
        server.send_tls13_tickets = 0;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config)?;
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Security::Tls(Arc::new(Identity { client: Arc::new(client), server: Arc::new(server), dir: dir.into() })))
    }

    /// Whether connections are encrypted and authenticated.
    pub fn is_tls(&self) -> bool {
        matches!(self, Security::Tls(_))
    }

    /// The accepting side of a connection: the TLS handshake as the server, within
    /// `timeout` in all (however slowly the peer sends). Nothing is sent to the peer
    /// but the handshake until its certificate is verified.
    pub fn server(&self, socket: TcpStream, timeout: Duration) -> Result<Channel, TlsError> {
        match self {
            Security::Insecure => Ok(Channel::plain(socket)),
            Security::Tls(id) => {
                let conn = ServerConnection::new(id.server.clone()).map_err(TlsError::Rejected)?;
                Channel::handshake(socket, conn.into(), timeout)
            }
        }
    }

    /// The connecting side: the TLS handshake as the client, within `timeout`.
    pub fn client(&self, socket: TcpStream, timeout: Duration) -> Result<Channel, TlsError> {
        match self {
            Security::Insecure => Ok(Channel::plain(socket)),
            Security::Tls(id) => {
                let name = ServerName::try_from(MEMBER_NAME).map_err(|e| TlsError::Config(e.to_string()))?;
                let conn = ClientConnection::new(id.client.clone(), name).map_err(TlsError::Rejected)?;
                Channel::handshake(socket, conn.into(), timeout)
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
