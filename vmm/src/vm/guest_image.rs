//! The guest kernel: the one built with this monitor (embedded), or one given with `--kernel`.
use std::borrow::Cow;
use std::path::Path;

/// The guest ELF that `vmm/build.rs` built from `guest/`.
pub static EMBEDDED: &[u8] = include_bytes!(env!("FTVMM_GUEST_ELF"));

/// Refuse absurd files before reading them into memory.
const MAX_IMAGE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read guest kernel {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest kernel {path} is {size} bytes; the limit is {MAX_IMAGE_BYTES}")]
    TooBig { path: String, size: u64 },
}

pub fn load(path: Option<&Path>) -> Result<Cow<'static, [u8]>, ImageError> {
    let Some(path) = path else {
        return Ok(Cow::Borrowed(EMBEDDED));
    };
    let shown = path.display().to_string();
    let read_err = |source| ImageError::Read { path: shown.clone(), source };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_IMAGE_BYTES {
        return Err(ImageError::TooBig { path: shown, size });
    }
    Ok(Cow::Owned(std::fs::read(path).map_err(read_err)?))
}
