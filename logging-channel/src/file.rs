//! The record file written by `ftvmm record --log FILE`: a fixed header that
//! pins down what was recorded, then record frames. See the crate docs for the
//! byte layout.

use std::io::{self, Read, Write};

use crate::codec::{self, frame, CodecError, RecordReader, Sequencer};
use crate::record::{short_hex, Hash, Record};

/// First bytes of every log file.
pub const MAGIC: [u8; 8] = *b"FTVMMLOG";
/// The file format this ftvmm writes: version 2 adds the guest configuration block
/// after the header. Version 1 files ([`FILE_VERSION_1`], no block) are still read.
pub const FILE_VERSION: u16 = 2;
/// The first file format: no guest configuration block.
pub const FILE_VERSION_1: u16 = 1;
/// The most bytes the guest configuration block may hold.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;
/// Bytes in the file header, checksum included.
pub const HEADER_LEN: usize = 8 + 2 + 2 + 32 + 8 + 32 + 4 + 4;

/// Everything a replay must reproduce exactly for the log to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogHeader {
    pub guest_image_digest: Hash,
    pub mem_size: u64,
    pub cpuid_digest: Hash,
    pub tick_hz: u32,
}

/// Everything that can be wrong with a log file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not an ftvmm log file (it does not start with \"FTVMMLOG\")")]
    NotALog,
    #[error(
        "log file format version {found} is not supported (this ftvmm reads versions 1 to \
         {supported}); replay it with the ftvmm build that recorded it"
    )]
    UnsupportedVersion { found: u16, supported: u16 },
    #[error("log file header is corrupt (checksum mismatch)")]
    HeaderChecksum,
    /// The reserved header field is kept for flags of future versions; a
    /// reader that does not know them must not guess.
    #[error(
        "log file header has reserved field {value:#06x} (expected 0); \
         it was written by a newer ftvmm"
    )]
    ReservedNotZero { value: u16 },
    /// `part` is "header" or "last record": a log whose recorder died mid-write
    /// ends inside its last frame.
    #[error("log file is truncated: it ends in the middle of its {part}")]
    Truncated { part: &'static str },
    #[error("log was recorded with another {field} ({recorded} vs {expected}); {}", mismatch_hint(field))]
    Mismatch { field: &'static str, recorded: String, expected: String },
    #[error(
        "log file's guest configuration block claims {len} bytes (at most {max}); \
         the file is corrupt or not written by ftvmm"
    )]
    ConfigTooLarge { len: usize, max: usize },
    #[error("log file's guest configuration block is corrupt (checksum mismatch)")]
    ConfigChecksum,
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("I/O error on log file: {0}")]
    Io(#[from] io::Error),
}

fn mismatch_hint(field: &str) -> &'static str {
    match field {
        FIELD_GUEST_IMAGE => "replay it with the same ftvmm build / --kernel",
        FIELD_MEM_SIZE => "replay it with the same guest memory size",
        FIELD_CPUID => "replay it with the same ftvmm build on a host exposing the same CPUID",
        FIELD_TICK_HZ => "replay it with the same timer tick rate",
        _ => "replay it with the same configuration it was recorded with",
    }
}

const FIELD_GUEST_IMAGE: &str = "guest image digest";
const FIELD_MEM_SIZE: &str = "memory size";
const FIELD_CPUID: &str = "CPUID table digest";
const FIELD_TICK_HZ: &str = "tick rate";

/// Digests are shortened to their first bytes, unless those are equal.
fn digest_pair(recorded: &Hash, expected: &Hash) -> (String, String) {
    let (r, e) = (short_hex(recorded), short_hex(expected));
    if r != e {
        (r, e)
    } else {
        (crate::record::full_hex(recorded), crate::record::full_hex(expected))
    }
}

impl LogHeader {
    /// Checks that a log recorded with `self` can be replayed on a machine set
    /// up as `expected`; the error names the first field that differs.
    pub fn check_matches(&self, expected: &LogHeader) -> Result<(), FileError> {
        let mismatch =
            |field, (recorded, expected): (String, String)| FileError::Mismatch { field, recorded, expected };
        if self.guest_image_digest != expected.guest_image_digest {
            let pair = digest_pair(&self.guest_image_digest, &expected.guest_image_digest);
            return Err(mismatch(FIELD_GUEST_IMAGE, pair));
        }
        if self.mem_size != expected.mem_size {
            let pair = (format!("{} bytes", self.mem_size), format!("{} bytes", expected.mem_size));
            return Err(mismatch(FIELD_MEM_SIZE, pair));
        }
        if self.cpuid_digest != expected.cpuid_digest {
            let pair = digest_pair(&self.cpuid_digest, &expected.cpuid_digest);
            return Err(mismatch(FIELD_CPUID, pair));
        }
        if self.tick_hz != expected.tick_hz {
            let pair = (format!("{} Hz", self.tick_hz), format!("{} Hz", expected.tick_hz));
            return Err(mismatch(FIELD_TICK_HZ, pair));
        }
        Ok(())
    }

    /// The header as it is stored at the start of a log file.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FILE_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.guest_image_digest);
        out.extend_from_slice(&self.mem_size.to_le_bytes());
        out.extend_from_slice(&self.cpuid_digest);
        out.extend_from_slice(&self.tick_hz.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.try_into().expect("HEADER_LEN matches the fields")
    }

    /// Parses a stored header. Magic and version are judged before the
    /// checksum, because another version may lay the header out differently.
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> Result<Self, FileError> {
        if bytes[..8] != MAGIC {
            return Err(FileError::NotALog);
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FILE_VERSION_1 && version != FILE_VERSION {
            return Err(FileError::UnsupportedVersion { found: version, supported: FILE_VERSION });
        }
        let (body, crc) = bytes.split_at(HEADER_LEN - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(FileError::HeaderChecksum);
        }
        let reserved = u16::from_le_bytes([bytes[10], bytes[11]]);
        if reserved != 0 {
            return Err(FileError::ReservedNotZero { value: reserved });
        }
        let hash_at = |at: usize| -> Hash { bytes[at..at + 32].try_into().expect("in bounds") };
        Ok(LogHeader {
            guest_image_digest: hash_at(12),
            mem_size: u64::from_le_bytes(bytes[44..52].try_into().expect("in bounds")),
            cpuid_digest: hash_at(52),
            tick_hz: u32::from_le_bytes(bytes[84..88].try_into().expect("in bounds")),
        })
    }
}

/// Writes a log file: the header at creation, then one frame per record.
///
/// Each record is validated ([`codec::validate`]) and order-checked
/// ([`Sequencer`]) before any byte of it is written, so a log this writer
/// produced always reads back. It does not buffer: wrap the sink in a
/// `BufWriter` and call [`LogWriter::flush`] at the points the log must be
/// durable.
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    inner: W,
    sequencer: Sequencer,
    scratch: Vec<u8>,
}

impl<W: Write> LogWriter<W> {
    /// Writes the header to `inner`, with an empty guest configuration.
    pub fn new(inner: W, header: &LogHeader) -> io::Result<Self> {
        Self::with_config(inner, header, &[])
    }

    /// Writes the header and `config`, the guest configuration the log was recorded
    /// with (opaque here; at most [`MAX_CONFIG_LEN`] bytes), to `inner`.
    pub fn with_config(mut inner: W, header: &LogHeader, config: &[u8]) -> io::Result<Self> {
        if config.len() > MAX_CONFIG_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "guest configuration too large for a log header"));
        }
        inner.write_all(&header.to_bytes())?;
        inner.write_all(&(config.len() as u32).to_le_bytes())?;
        inner.write_all(config)?;
        inner.write_all(&crc32fast::hash(config).to_le_bytes())?;
        Ok(Self { inner, sequencer: Sequencer::new(), scratch: Vec::new() })
    }

    /// Appends `record`, or rejects it (writing nothing) if it is invalid or
    /// out of order.
    pub fn write(&mut self, record: &Record) -> Result<(), FileError> {
        codec::validate(record)?;
        self.sequencer.check(record)?;
        self.scratch.clear();
        codec::encode(record, &mut self.scratch);
        self.inner.write_all(&self.scratch)?;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The underlying sink, without flushing it.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Reads the guest configuration block (length, bytes, checksum) after a version 2 header.
fn read_config(inner: &mut impl Read) -> Result<Vec<u8>, FileError> {
    let truncated = |e| match e {
        CodecError::Io(io) => FileError::Io(io),
        _ => FileError::Truncated { part: "guest configuration" },
    };
    let mut len = [0u8; 4];
    if frame::read_full(inner, &mut len).map_err(truncated)? < 4 {
        return Err(FileError::Truncated { part: "guest configuration" });
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_CONFIG_LEN {
        return Err(FileError::ConfigTooLarge { len, max: MAX_CONFIG_LEN });
    }
    let mut config = vec![0u8; len + 4];
    if frame::read_full(inner, &mut config).map_err(truncated)? < len + 4 {
        return Err(FileError::Truncated { part: "guest configuration" });
    }
    let crc = config.split_off(len);
    if crc32fast::hash(&config).to_le_bytes()[..] != crc[..] {
        return Err(FileError::ConfigChecksum);
    }
    Ok(config)
}

/// Reads a log file: header first, then records in checked order.
#[derive(Debug)]
pub struct LogReader<R: Read> {
    records: RecordReader<R>,
    sequencer: Sequencer,
    config: Option<Vec<u8>>,
}

impl<R: Read> LogReader<R> {
    /// Reads and checks the header. Compare the header with the replaying
    /// machine's with [`LogHeader::check_matches`].
    pub fn open(mut inner: R) -> Result<(Self, LogHeader), FileError> {
        let mut bytes = [0u8; HEADER_LEN];
        let got = frame::read_full(&mut inner, &mut bytes).map_err(|e| match e {
            CodecError::Io(io) => FileError::Io(io),
            _ => FileError::Truncated { part: "header" },
        })?;
        // Judge the magic on whatever arrived, so a short non-log file is
        // reported as "not a log" rather than "truncated".
        let magic_seen = got.min(MAGIC.len());
        if bytes[..magic_seen] != MAGIC[..magic_seen] {
            return Err(FileError::NotALog);
        }
        if got < HEADER_LEN {
            return Err(FileError::Truncated { part: "header" });
        }
        let header = LogHeader::from_bytes(&bytes)?;
        let config = match u16::from_le_bytes([bytes[8], bytes[9]]) {
            FILE_VERSION => Some(read_config(&mut inner)?),
            _ => None,
        };
        let reader = Self { records: RecordReader::new(inner), sequencer: Sequencer::new(), config };
        Ok((reader, header))
    }

    /// The guest configuration the log was recorded with, or `None` for a version 1
    /// log, which carries none.
    pub fn config(&self) -> Option<&[u8]> {
        self.config.as_deref()
    }

    /// The next record, or `Ok(None)` at the end of the file. A log whose
    /// recorder died may end without an `End` record; see
    /// [`LogReader::is_complete`].
    pub fn next_record(&mut self) -> Result<Option<Record>, FileError> {
        let Some(record) = self.records.next_record().map_err(FileError::from_codec)? else {
            return Ok(None);
        };
        self.sequencer.check(&record)?;
        Ok(Some(record))
    }

    /// Whether the `End` record has been read.
    pub fn is_complete(&self) -> bool {
        self.sequencer.is_ended()
    }

    /// The ordering state, e.g. to learn how far the log covers.
    pub fn sequencer(&self) -> &Sequencer {
        &self.sequencer
    }

    pub fn into_inner(self) -> R {
        self.records.into_inner()
    }
}

impl FileError {
    fn from_codec(e: CodecError) -> Self {
        match e {
            CodecError::Truncated => FileError::Truncated { part: "last record" },
            CodecError::Io(io) => FileError::Io(io),
            other => FileError::Codec(other),
        }
    }
}
