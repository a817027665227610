//! The NIC's host side: a Linux TAP device.
//!
//! `nic-rx` reads frames from the TAP and hands them to the vCPU loop, which
//! decides at which exit they enter the guest (and logs that). Transmit is a
//! plain `write` from the output thread.
use crossbeam_channel::{Sender, TrySendError};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// The largest frame read from a TAP.
pub const MAX_FRAME: usize = 65_536;
/// The EtherType of ARP.
pub const ETH_ARP: [u8; 2] = [0x08, 0x06];

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("TAP name {0:?} is not a valid interface name (1 to 15 bytes, no '/' or whitespace)")]
    BadName(String),
    #[error("cannot open /dev/net/tun ({0}); load the tun module and run as root")]
    OpenTun(#[source] std::io::Error),
    #[error("cannot attach to TAP device {name} ({source}); is it in use by another process, or of another type?")]
    Attach {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bring TAP device {name} up: {source}")]
    LinkUp {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// An attached TAP device; clones share the one file descriptor.
#[derive(Clone)]
pub struct Tap {
    file: Arc<File>,
    name: String,
}

fn ifreq_for(name: &str) -> Result<libc::ifreq, TapError> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() >= libc::IFNAMSIZ
        || bytes.iter().any(|b| *b == b'/' || b.is_ascii_whitespace() || *b == 0)
    {
        return Err(TapError::BadName(name.to_string()));
    }
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

impl Tap {
    /// Attaches to TAP `name`, creating it if it does not exist, and sets it up.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        let mut req = ifreq_for(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads (and may update the name in) the ifreq we pass, which
        // lives across the call; the fd is the tun control file we just opened.
        let ret = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
        if ret < 0 {
            let source = std::io::Error::last_os_error();
            return Err(TapError::Attach { name: name.to_string(), source });
        }
        set_link_up(name).map_err(|source| TapError::LinkUp { name: name.to_string(), source })?;
        Ok(Tap { file: Arc::new(file), name: name.to_string() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame into `buf` (blocking); returns its length.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.file).read(buf)
    }

    /// Reads one frame into `buf`, waiting at most `timeout`: `None` when none came.
    pub fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<Option<usize>> {
        let mut pfd = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // Rounded up: a 0 ms poll for a sub-millisecond rest would make the caller spin.
        let ms = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: pfd is one valid pollfd that lives across the call; the fd is ours.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        match ready {
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
            0 => Ok(None),
            _ => self.read(buf).map(Some),
        }
    }

    /// Sends one frame; a full or missing link drops it, as a NIC would.
    pub fn send(&self, frame: &[u8]) {
        if let Err(e) = (&*self.file).write(frame) {
            tracing::debug!(tap = %self.name, "TAP write dropped a frame: {e}");
        }
    }

    /// Starts `nic-rx`: frames read from the TAP go to `frames`, until that receiver is gone.
    /// When the vCPU loop falls behind, frames are dropped here (before the log sees them),
    /// as a real NIC drops when its queue is full.
    pub fn spawn_reader<T: Send + 'static>(&self, frames: Sender<T>, wrap: fn(Vec<u8>) -> T) -> std::io::Result<()> {
        let file = self.file.clone();
        let name = self.name.clone();
        std::thread::Builder::new().name("nic-rx".into()).spawn(move || {
            let mut buf = vec![0u8; MAX_FRAME];
            loop {
                let n = match (&*file).read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::error!(tap = %name, "reading the TAP failed, NIC receive stops: {e}");
                        return;
                    }
                };
                match frames.try_send(wrap(buf[..n].to_vec())) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => tracing::debug!(tap = %name, "receive queue full, frame dropped"),
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        })?;
        Ok(())
    }
}

fn set_link_up(name: &str) -> std::io::Result<()> {
    // SAFETY: creating a datagram socket has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we own; wrapping it closes it on drop.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut req = ifreq_for(name).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just filled ifru_flags, so reading that union field is valid.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this process still speaks for the guest on the network. Cleared for good
/// when its group halts it (it was replaced): from then on it must not announce the
/// guest's address, or the switch would send the guest's clients to a VM that stopped.
static SPEAKS_FOR_GUEST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// This process no longer speaks for the guest (see [`speaks_for_guest`]).
pub fn fall_silent() {
    SPEAKS_FOR_GUEST.store(false, std::sync::atomic::Ordering::SeqCst);
}

/// Whether this process may still announce the guest.
pub fn speaks_for_guest() -> bool {
    SPEAKS_FOR_GUEST.load(std::sync::atomic::Ordering::SeqCst)
}

/// A gratuitous ARP request announcing that `ip` is at `mac`: after a failover,
/// switches learn the guest's new port and neighbours refresh their caches.
pub fn gratuitous_arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    arp_request(mac, ip, ip)
}

/// A broadcast ARP request from `mac`, sender address `sender`, asking who has
/// `target` (padded to Ethernet's 60-byte minimum).
pub fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]); // broadcast
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_ARP);
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_names_the_same_address_as_sender_and_target() {
        let f = gratuitous_arp([0x52, 0x54, 0, 1, 2, 3], [10, 0, 0, 7]);
        assert_eq!(f.len(), 60);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[28..32], &[10, 0, 0, 7]);
        assert_eq!(&f[38..42], &[10, 0, 0, 7]);
        assert_eq!(&f[22..28], &[0x52, 0x54, 0, 1, 2, 3]);
    }

    #[test]
    fn interface_names_are_checked_before_any_syscall() {
        for bad in ["", "sixteen-chars-xx", "a/b", "a b"] {
            assert!(matches!(ifreq_for(bad), Err(TapError::BadName(_))), "{bad:?}");
        }
        assert!(ifreq_for("tap0").is_ok());
    }
}
