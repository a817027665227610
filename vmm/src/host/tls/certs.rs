//! `ftvmm certs init DIR`: a group's CA and one certificate per member, made
//! with `rcgen`, so an operator needs no other tool.
//!
//! ```text
//!   DIR/ca.pem              the group's CA certificate
//!   DIR/ca.key              the CA's private key (0600): keep it off the members;
//!                           anyone holding it can make members
//!   DIR/NAME/ca.pem         a copy of the CA certificate    \
//!   DIR/NAME/cert.pem       NAME's certificate, CA-signed    }  member NAME's --tls-dir:
//!   DIR/NAME/key.pem        NAME's private key (0600)       /   copy it to NAME's host
//! ```
//! Keys are ECDSA P-256. Every member certificate names [`MEMBER_NAME`] (what
//! peers check) and NAME, and may serve and connect (members are both). The
//! certificates do not expire: a group whose CA key leaked makes a new CA.
use super::{CA_FILE, CERT_FILE, KEY_FILE, MEMBER_NAME};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The CA's private key in the output directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// The most members one `certs init` makes.
pub const MAX_MEMBERS: usize = 64;
/// The longest member name (a DNS label).
pub const MAX_NAME: usize = 63;

/// Why `certs init` made nothing.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("--members {0:?}: expected a count (1 to {MAX_MEMBERS}) or names, e.g. --members 3 or --members a,b,c")]
    Members(String),
    #[error(
        "member name {0:?}: use 1 to {MAX_NAME} lowercase letters, digits and '-', not starting or ending with '-'"
    )]
    Name(String),
    #[error("member name {0:?} is given twice")]
    Duplicate(String),
    #[error("{0} already holds a CA key: refusing to replace a group's CA (use another directory)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Parses `--members`: a count N (`member-1` .. `member-N`) or comma-separated names.
pub fn member_names(spec: &str) -> Result<Vec<String>, CertsError> {
    let names: Vec<String> = match spec.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_MEMBERS).contains(&n) => (1..=n).map(|i| format!("member-{i}")).collect(),
        Ok(_) => return Err(CertsError::Members(spec.into())),
        Err(_) => spec.split(',').map(|s| s.trim().to_string()).collect(),
    };
    if names.is_empty() || names.len() > MAX_MEMBERS {
        return Err(CertsError::Members(spec.into()));
    }
    for (i, name) in names.iter().enumerate() {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !ok {
            return Err(CertsError::Name(name.clone()));
        }
        if names[..i].contains(name) {
            return Err(CertsError::Duplicate(name.clone()));
        }
    }
    Ok(names)
}

fn write(path: &Path, contents: &str, secret: bool) -> Result<(), CertsError> {
    let fail = |source| CertsError::Write { path: path.into(), source };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(fail)?;
    file.write_all(contents.as_bytes()).map_err(fail)
}

/// Makes a CA and a certificate for each of `names` in `dir` (created if missing);
/// returns each member's directory, its `--tls-dir`.
pub fn init(dir: &Path, names: &[String]) -> Result<Vec<PathBuf>, CertsError> {
    let ca_key_path = dir.join(CA_KEY_FILE);
    if ca_key_path.exists() {
        return Err(CertsError::Exists(dir.into()));
    }
    let mkdir = |d: &Path| std::fs::create_dir_all(d).map_err(|source| CertsError::Write { path: d.into(), source });
    mkdir(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "ftvmm group CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let mut dirs = Vec::with_capacity(names.len());
    for name in names {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![MEMBER_NAME.to_string(), name.clone()])?;
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        let member = dir.join(name);
        mkdir(&member)?;
        write(&member.join(CA_FILE), &ca_cert.pem(), false)?;
        write(&member.join(CERT_FILE), &cert.pem(), false)?;
        write(&member.join(KEY_FILE), &key.serialize_pem(), true)?;
        dirs.push(member);
    }
    write(&dir.join(CA_FILE), &ca_cert.pem(), false)?;
    // Last: its presence means a whole CA was made here.
    write(&ca_key_path, &ca_key.serialize_pem(), true)?;
    Ok(dirs)
}
