//! An in-memory duplex byte stream, for testing what runs over the logging
//! channel without sockets: each end reads what the other wrote, with an
//! optional read timeout (`WouldBlock` when it expires) and end-of-stream once
//! the other end is dropped — the same contract a TCP connection gives.
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use std::io::{self, Read, Write};
use std::time::Duration;

/// One end of a [`pipe`].
pub struct PipeEnd {
    tx: Option<Sender<Vec<u8>>>,
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    read_timeout: Option<Duration>,
}

/// A connected pair of ends.
pub fn pipe() -> (PipeEnd, PipeEnd) {
    let (a_tx, b_rx) = unbounded();
    let (b_tx, a_rx) = unbounded();
    let end = |tx, rx| PipeEnd { tx: Some(tx), rx, pending: Vec::new(), read_timeout: None };
    (end(a_tx, a_rx), end(b_tx, b_rx))
}

impl PipeEnd {
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Closes the writing half: the other end reads end-of-stream after what was sent.
    pub fn shutdown_write(&mut self) {
        self.tx = None;
    }
}

impl Read for PipeEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            let chunk = match self.read_timeout {
                Some(t) => match self.rx.recv_timeout(t) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => return Err(io::ErrorKind::WouldBlock.into()),
                    Err(RecvTimeoutError::Disconnected) => return Ok(0),
                },
                None => match self.rx.recv() {
                    Ok(c) => c,
                    Err(_) => return Ok(0),
                },
            };
            self.pending = chunk;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for PipeEnd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let tx = self.tx.as_ref().ok_or(io::ErrorKind::BrokenPipe)?;
        tx.send(buf.to_vec()).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_in_order_and_a_dropped_end_reads_as_end_of_stream() {
        let (mut a, mut b) = pipe();
        a.write_all(b"hello ").expect("write");
        a.write_all(b"world").expect("write");
        drop(a);
        let mut got = String::new();
        b.read_to_string(&mut got).expect("read");
        assert_eq!(got, "hello world");
    }

    #[test]
    fn a_silent_peer_times_out_with_would_block() {
        let (_a, mut b) = pipe();
        b.set_read_timeout(Some(Duration::from_millis(10)));
        let err = b.read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
