//! The name of a replication group, which scopes its arbiter claims and witness
//! record (`docs/design.md`, "The group, its epoch and the arbiter").
//!
//! A group's first primary makes one up (the guest's address and a random id)
//! unless the operator gave `--group-name`, and every member learns it from the
//! `Hello` of the primary it joins. It is a file name and an etcd key component,
//! so it is limited to `[A-Za-z0-9._-]`, at most [`MAX_GROUP_NAME`] bytes, and
//! may not start with a dot or a dash. It is kept in a fixed array so that
//! `Hello` stays `Copy`.
use std::fmt;

/// The longest group name.
pub const MAX_GROUP_NAME: usize = 64;

/// A valid group name, or none (a member that does not know its group yet).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupName {
    len: u8,
    bytes: [u8; MAX_GROUP_NAME],
}

/// Why a text is not a group name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupNameError {
    #[error("a group name is 1 to {MAX_GROUP_NAME} characters; {0} is too long")]
    TooLong(usize),
    #[error("a group name may hold only letters, digits, '.', '_' and '-', and may not start with '.' or '-': {0:?}")]
    BadCharacter(String),
}

impl GroupName {
    /// No name: the member has not learned its group's name yet.
    pub const NONE: GroupName = GroupName { len: 0, bytes: [0; MAX_GROUP_NAME] };

    /// Checks and stores `name`; the empty text is [`GroupName::NONE`].
    pub fn new(name: &str) -> Result<GroupName, GroupNameError> {
        if name.len() > MAX_GROUP_NAME {
            return Err(GroupNameError::TooLong(name.len()));
        }
        let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
        if !name.bytes().all(ok) || name.starts_with(['.', '-']) {
            return Err(GroupNameError::BadCharacter(name.to_string()));
        }
        let mut bytes = [0; MAX_GROUP_NAME];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        // Fits: checked against MAX_GROUP_NAME (< 256) above.
        Ok(GroupName { len: name.len() as u8, bytes })
    }

    /// The name ("" for none).
    pub fn as_str(&self) -> &str {
        // Only `new` fills `bytes`, with checked ASCII.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether this is [`GroupName::NONE`].
    pub fn is_none(&self) -> bool {
        self.len == 0
    }

    /// `Some(name)`, or `None` for no name.
    pub fn known(&self) -> Option<&str> {
        (!self.is_none()).then(|| self.as_str())
    }
}

impl Default for GroupName {
    fn default() -> Self {
        GroupName::NONE
    }
}

impl fmt::Debug for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupName({:?})", self.as_str())
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_none() { "(none yet)" } else { self.as_str() })
    }
}

impl std::str::FromStr for GroupName {
    type Err = GroupNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GroupName::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_round_trip() {
        let n = GroupName::new("10.77.0.10-3fa9c2d1").expect("valid");
        assert_eq!(n.as_str(), "10.77.0.10-3fa9c2d1");
        assert_eq!(n.known(), Some("10.77.0.10-3fa9c2d1"));
        assert!(GroupName::new("").expect("empty is none").is_none());
        assert_eq!(GroupName::NONE.known(), None);
        let longest = "a".repeat(MAX_GROUP_NAME);
        assert_eq!(GroupName::new(&longest).expect("at the limit").as_str(), longest);
        assert_eq!(GroupName::new(&format!("{longest}a")), Err(GroupNameError::TooLong(MAX_GROUP_NAME + 1)));
        for bad in ["a/b", "../x", ".hidden", "-flag", "a b", "é", "a\nb", "x:y"] {
            assert!(matches!(GroupName::new(bad), Err(GroupNameError::BadCharacter(_))), "{bad:?}");
        }
    }
}
