//! Where a live VM's log goes: the [`LogSink`] trait, and its file
//! implementation (`ftvmm record`), which writes on its own thread (`log-tx`)
//! so that file I/O never stalls the guest.
use crossbeam_channel::{unbounded, Sender};
use logging_channel::{FileError, LogHeader, LogWriter, Record};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::thread::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot create log file {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the log failed: {0}")]
    Write(#[from] FileError),
    #[error("writing the log failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the log writer thread died")]
    WriterGone,
}

/// Receives the records a live VM produces, in order.
pub trait LogSink: Send {
    fn send(&mut self, record: Record) -> Result<(), RecordError>;
    /// Sends the records of one exit together: nothing (a heartbeat) may come between them.
    fn send_batch(&mut self, records: Vec<Record>) -> Result<(), RecordError> {
        records.into_iter().try_for_each(|r| self.send(r))
    }
    /// Called at every counted exit before anything is logged for it; a sink may
    /// block here to keep its reader from falling too far behind (flow control).
    fn throttle(&mut self, _exit_index: u64) {}
    /// Flushes everything; called once, after the final record.
    fn finish(self: Box<Self>) -> Result<(), RecordError>;
}

pub struct Recorder {
    tx: Option<Sender<Record>>,
    writer: Option<JoinHandle<Result<(), RecordError>>>,
}

impl Recorder {
    /// Creates the log at `path` with `header` and the guest `config` it records.
    pub fn create(path: &Path, header: &LogHeader, config: &[u8]) -> Result<Recorder, RecordError> {
        let create_err = |source| RecordError::Create { path: path.display().to_string(), source };
        let file = File::create(path).map_err(create_err)?;
        let mut log = LogWriter::with_config(BufWriter::with_capacity(1 << 16, file), header, config)?;
        let (tx, rx) = unbounded::<Record>();
        let writer = std::thread::Builder::new()
            .name("log-tx".into())
            .spawn(move || {
                for record in rx {
                    log.write(&record)?;
                }
                log.flush()?;
                log.into_inner().into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(())
            })
            .map_err(RecordError::Io)?;
        Ok(Recorder { tx: Some(tx), writer: Some(writer) })
    }
}

impl LogSink for Recorder {
    fn send(&mut self, record: Record) -> Result<(), RecordError> {
        let tx = self.tx.as_ref().ok_or(RecordError::WriterGone)?;
        tx.send(record).map_err(|_| RecordError::WriterGone)
    }

    /// Flushes everything to disk.
    fn finish(mut self: Box<Self>) -> Result<(), RecordError> {
        self.tx.take();
        match self.writer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(RecordError::WriterGone),
        }
    }
}
