//! The crate's one error type and its only two mappings: to an errno (FUSE) and to an
//! exit code (CLI). Both matches are exhaustive with no `_` arm, so a new variant cannot
//! be added without deciding what users see.

use std::fmt;
use std::io;

/// Every failure pbsfs reports. Each message names the object it is about (a chunk
/// digest and path, a snapshot, an archive, a lock file), so the user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot, group, archive, namespace or file that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Damaged data: a chunk, index, blob or manifest that fails a check.
    #[error("{0}")]
    Corrupt(String),
    /// Encrypted chunk or blob: pbsfs holds no key.
    #[error("{0}")]
    Encrypted(String),
    /// A lock is held by someone else (non-blocking attempt, or a deadline passed).
    #[error("{0}")]
    LockBusy(String),
    /// `verify_state` content that is not `ok`, `failed`, empty or a valid state object.
    #[error("{0}")]
    InvalidVerifyState(String),
    /// Notes that are not valid UTF-8.
    #[error("{0}")]
    InvalidUtf8(String),
    /// Content over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// A write to a store that must not be written (S3 backend, maintenance mode) or to a
    /// read-only mount.
    #[error("{0}")]
    ReadOnly(String),
    /// A name, argument or request that is malformed (bad snapshot name, bad size, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// Something that must not exist already exists (a manifest, an owner file, a chunk dir).
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation is refused by policy: a protected snapshot, renaming `notes`.
    #[error("{0}")]
    NotPermitted(String),
    /// A write to a read-only file of a writable mount, or a new file where none may be.
    #[error("{0}")]
    AccessDenied(String),
    /// The mount's in-memory space for editors' scratch files is full.
    #[error("{0}")]
    NoSpace(String),
    /// Any other I/O failure, with the object it happened on.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno a FUSE request answers with (ARCHITECTURE §5).
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound(_) => libc::ENOENT,
            Error::Corrupt(_) => libc::EIO,
            Error::Encrypted(_) => libc::ENOKEY,
            Error::LockBusy(_) => libc::EAGAIN,
            Error::InvalidVerifyState(_) => libc::EINVAL,
            Error::InvalidUtf8(_) => libc::EILSEQ,
            Error::TooLarge(_) => libc::EFBIG,
            Error::ReadOnly(_) => libc::EROFS,
            Error::InvalidInput(_) => libc::EINVAL,
            Error::AlreadyExists(_) => libc::EEXIST,
            Error::NotPermitted(_) => libc::EPERM,
            Error::AccessDenied(_) => libc::EACCES,
            Error::NoSpace(_) => libc::ENOSPC,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// The process exit code of a CLI command that failed with this error. Exit code 1 is
    /// reserved for "verify found damage", which is a verify *result*, not an error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound(_) => 2,
            Error::Corrupt(_) => 2,
            Error::Encrypted(_) => 2,
            Error::LockBusy(_) => 2,
            Error::InvalidVerifyState(_) => 2,
            Error::InvalidUtf8(_) => 2,
            Error::TooLarge(_) => 2,
            Error::ReadOnly(_) => 2,
            Error::InvalidInput(_) => 2,
            Error::AlreadyExists(_) => 2,
            Error::NotPermitted(_) => 2,
            Error::AccessDenied(_) => 2,
            Error::NoSpace(_) => 2,
            Error::Io { .. } => 2,
        }
    }

    /// Wrap an I/O error with the object it happened on. A missing file becomes
    /// `NotFound` so callers and users see one kind for "does not exist".
    pub fn io(context: impl fmt::Display, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound(format!("{context}: {source}"))
        } else {
            Error::Io {
                context: context.to_string(),
                source,
            }
        }
    }

    /// Prefix the message with the object the caller knows about (e.g. the archive a chunk
    /// belongs to), keeping the variant and therefore the errno.
    pub fn context(self, what: impl fmt::Display) -> Error {
        match self {
            Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
            Error::Corrupt(m) => Error::Corrupt(format!("{what}: {m}")),
            Error::Encrypted(m) => Error::Encrypted(format!("{what}: {m}")),
            Error::LockBusy(m) => Error::LockBusy(format!("{what}: {m}")),
            Error::InvalidVerifyState(m) => Error::InvalidVerifyState(format!("{what}: {m}")),
            Error::InvalidUtf8(m) => Error::InvalidUtf8(format!("{what}: {m}")),
            Error::TooLarge(m) => Error::TooLarge(format!("{what}: {m}")),
            Error::ReadOnly(m) => Error::ReadOnly(format!("{what}: {m}")),
            Error::InvalidInput(m) => Error::InvalidInput(format!("{what}: {m}")),
            Error::AlreadyExists(m) => Error::AlreadyExists(format!("{what}: {m}")),
            Error::NotPermitted(m) => Error::NotPermitted(format!("{what}: {m}")),
            Error::AccessDenied(m) => Error::AccessDenied(format!("{what}: {m}")),
            Error::NoSpace(m) => Error::NoSpace(format!("{what}: {m}")),
            Error::Io { context, source } => Error::Io {
                context: format!("{what}: {context}"),
                source,
            },
        }
    }
}

impl Error {
    /// A copy with the same variant, so the same errno (`io::Error` is not `Clone`): for
    /// poisoned handles that repeat their error.
    pub fn duplicate(&self) -> Error {
        match self {
            Error::NotFound(m) => Error::NotFound(m.clone()),
            Error::Corrupt(m) => Error::Corrupt(m.clone()),
            Error::Encrypted(m) => Error::Encrypted(m.clone()),
            Error::LockBusy(m) => Error::LockBusy(m.clone()),
            Error::InvalidVerifyState(m) => Error::InvalidVerifyState(m.clone()),
            Error::InvalidUtf8(m) => Error::InvalidUtf8(m.clone()),
            Error::TooLarge(m) => Error::TooLarge(m.clone()),
            Error::ReadOnly(m) => Error::ReadOnly(m.clone()),
            Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
            Error::AlreadyExists(m) => Error::AlreadyExists(m.clone()),
            Error::NotPermitted(m) => Error::NotPermitted(m.clone()),
            Error::AccessDenied(m) => Error::AccessDenied(m.clone()),
            Error::NoSpace(m) => Error::NoSpace(m.clone()),
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: match source.raw_os_error() {
                    Some(n) => io::Error::from_raw_os_error(n),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
        }
    }
}

/// Attach the object's name to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_errno_and_missing_files_are_not_found() {
        let e = Error::io("x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        let e = Error::io("x", io::Error::from_raw_os_error(libc::ENOENT));
        assert!(matches!(e, Error::NotFound(_)));
        assert_eq!(e.errno(), libc::ENOENT);
    }

    #[test]
    fn context_keeps_the_variant() {
        let e = Error::Corrupt("digest mismatch".into()).context("chunk abc");
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(e.to_string(), "chunk abc: digest mismatch");
    }
}
