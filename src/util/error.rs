//! The crate's one error type and its only two mappings: to an errno (FUSE) and to an
//! exit code (CLI). Each variant is one kind of failure and holds the object it names;
//! messages are built only by `Display`. Both mappings are exhaustive with no `_` arm,
//! so a new variant cannot be added without deciding what users see. Code decides on
//! the variant (`Error::kind()` looks through added context), never on message text.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::util::digest::Digest;

/// Exit codes of the CLI.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// `verify` found damage: a result, not an error.
    pub const DAMAGE: i32 = 1;
    /// The command failed (bad input, missing object, lock busy, I/O error, ...).
    pub const FAILURE: i32 = 2;
}

/// Why stored bytes failed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptKind {
    /// Shorter than the format needs.
    Truncated { len: u64, need: u64 },
    /// A file whose size the format rules out (before reading it).
    Size { len: u64, why: &'static str },
    /// Not one of the format's magic numbers.
    Magic,
    /// The CRC-32 over the payload differs from the one stored.
    Crc { stored: u32, computed: u32 },
    /// The compressed payload does not decode.
    Decode(String),
    /// Decodes to more than may come out of it.
    Oversized { limit: u64 },
    /// The content hashes to another digest than its name.
    DigestMismatch,
    /// The decoded length differs from the one the index gives.
    Length { actual: u64, expected: u64 },
    /// The index checksum (or size) disagrees with the manifest.
    ManifestMismatch {
        field: &'static str,
        actual: String,
        manifest: String,
    },
    /// Not a regular file where one is expected (a FIFO, device, folder, symlink): not
    /// read.
    FileType(&'static str),
    /// An archive the manifest does not list.
    NotInManifest,
    /// A rule of the format is broken (described).
    Format(String),
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::Truncated { len, need } => {
                write!(f, "truncated: {len} bytes, at least {need} needed")
            }
            CorruptKind::Size { len, why } => write!(f, "file of {len} bytes: {why}"),
            CorruptKind::Magic => write!(f, "unknown magic number"),
            CorruptKind::Crc { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            CorruptKind::Decode(why) => write!(f, "payload does not decode: {why}"),
            CorruptKind::Oversized { limit } => write!(f, "decodes to more than {limit} bytes"),
            CorruptKind::DigestMismatch => write!(f, "digest mismatch"),
            CorruptKind::Length { actual, expected } => {
                write!(f, "length {actual} differs from the index's {expected}")
            }
            CorruptKind::ManifestMismatch {
                field,
                actual,
                manifest,
            } => write!(f, "{field} {actual} differs from the manifest's {manifest}"),
            CorruptKind::NotInManifest => write!(f, "not listed in the manifest"),
            CorruptKind::FileType(kind) => {
                write!(f, "a {kind} where a regular file is expected (not read)")
            }
            CorruptKind::Format(why) => write!(f, "{why}"),
        }
    }
}

/// Why a write is refused on a store or mount that is read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOnlyWhy {
    /// Mounted with `-o ro` (or read-only by itself).
    Mount,
    /// The datastore may not be written: S3 backend or maintenance mode (the reason).
    Store(String),
}

/// How a lock could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWhy {
    /// Held by someone else (one non-blocking attempt).
    Held,
    /// Still held when the deadline passed.
    TimedOut,
    /// The lock file was replaced again and again while we tried.
    Vanishing,
}

/// Every failure pbsfs reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A snapshot, group, archive, namespace or file that does not exist.
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// A snapshot folder without its manifest (a running or failed backup).
    #[error("snapshot {snapshot} is not finished (no index.json.blob)")]
    NotFinished { snapshot: String },
    /// A folder that is not a datastore.
    #[error("{} is not a datastore: it has no .chunks folder", path.display())]
    NotADatastore { path: PathBuf },
    /// A chunk an index references is not in the chunk store.
    #[error("chunk {digest} ({}): missing", path.display())]
    ChunkMissing { digest: Digest, path: PathBuf },
    /// A chunk file that fails a check.
    #[error("chunk {digest} ({}): {why}", path.display())]
    ChunkCorrupt {
        digest: Digest,
        path: PathBuf,
        why: CorruptKind,
    },
    /// Damaged data other than a chunk: an index, blob, manifest or archive.
    #[error("{what}: {why}")]
    Corrupt { what: String, why: CorruptKind },
    /// Encrypted chunk or blob: pbsfs holds no key.
    #[error("{what}: encrypted, key required")]
    Encrypted { what: String },
    /// A snapshot, group or manifest lock that could not be taken.
    #[error("{}", lock_message(what, lock, *why))]
    LockBusy {
        what: String,
        lock: PathBuf,
        why: LockWhy,
    },
    /// The datastore's process lock (`.lock`): gc excludes backups and the reverse.
    #[error("unable to get {} lock on {} - {}",
        if *exclusive { "exclusive" } else { "shared" }, lock.display(),
        if *exclusive { "a backup or another gc is running" } else { "garbage collection is running" })]
    StoreBusy { lock: PathBuf, exclusive: bool },
    /// `verify_state` content that is not `ok`, `failed`, empty or a valid state object.
    #[error("{what}: {why}")]
    InvalidVerifyState { what: String, why: String },
    /// Text that must be UTF-8 and is not.
    #[error("{what}: not valid UTF-8 (invalid byte at offset {offset})")]
    InvalidUtf8 { what: String, offset: usize },
    /// Content over a size limit.
    #[error("{what}: {size} bytes exceed the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// A write where nothing may be written.
    #[error("{what}: {}", match why {
        ReadOnlyWhy::Mount => "the mount is read-only".to_string(),
        ReadOnlyWhy::Store(r) => format!("{r}: refusing to write"),
    })]
    ReadOnly { what: String, why: ReadOnlyWhy },
    /// Refused by the store's state: a maintenance mode that forbids reads, or chunk
    /// data that lives in an S3 bucket.
    #[error("{what}: {why}")]
    Unavailable { what: String, why: String },
    /// A malformed name, argument or request.
    #[error("{what}: {why}")]
    InvalidInput { what: String, why: String },
    /// Something that must not exist already exists.
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// Refused by policy: a protected snapshot, renaming `notes`, a foreign group owner.
    #[error("{what}: {why}")]
    NotPermitted { what: String, why: String },
    /// A write to a read-only file of a writable mount.
    #[error("{what} is read-only")]
    AccessDenied { what: String },
    /// The mount's in-memory space for editors' scratch files is full.
    #[error("{what}: no space left for scratch files")]
    NoSpace { what: String },
    /// An extended attribute the file does not have.
    #[error("{what} has no extended attribute {name}")]
    NoXattr { what: String, name: String },
    /// A file handle that is not open (or not of the kind the request needs).
    #[error("file handle {fh} is not open for this")]
    BadHandle { fh: u64 },
    /// A directory operation on something else.
    #[error("{what} is not a directory")]
    NotADirectory { what: String },
    /// A file operation on a directory.
    #[error("{what} is a directory")]
    IsADirectory { what: String },
    /// `readlink` or `open` of the wrong kind of node.
    #[error("{what} is a symbolic link")]
    IsASymlink { what: String },
    /// A name now holds other content than the inode the kernel asked for.
    #[error("{what} changed; look it up again")]
    Stale { what: String },
    /// Any other I/O failure, with the object it happened on.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: Arc<io::Error>,
    },
    /// An error inside a larger object (the archive a chunk belongs to, ...).
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

fn lock_message(what: &str, lock: &std::path::Path, why: LockWhy) -> String {
    match why {
        LockWhy::Held => format!(
            "{what} is locked by another operation (lock {})",
            lock.display()
        ),
        LockWhy::TimedOut => format!("{what}: timed out waiting for lock {}", lock.display()),
        LockWhy::Vanishing => format!("{what}: lock file {} keeps disappearing", lock.display()),
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error itself, under any context added by callers: what code decides on.
    pub fn kind(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.kind(),
            other => other,
        }
    }

    /// The errno a FUSE request answers with (ARCHITECTURE §5).
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotFound { .. } | Error::NotFinished { .. } | Error::NotADatastore { .. } => {
                libc::ENOENT
            }
            Error::ChunkMissing { .. } | Error::ChunkCorrupt { .. } | Error::Corrupt { .. } => {
                libc::EIO
            }
            Error::Encrypted { .. } => libc::ENOKEY,
            Error::LockBusy { .. } | Error::StoreBusy { .. } => libc::EAGAIN,
            Error::InvalidVerifyState { .. } => libc::EINVAL,
            Error::InvalidUtf8 { .. } => libc::EILSEQ,
            Error::TooLarge { .. } => libc::EFBIG,
            Error::ReadOnly { .. } => libc::EROFS,
            // "Operation not supported": reading this store is not possible (yet).
            Error::Unavailable { .. } => libc::EOPNOTSUPP,
            Error::InvalidInput { .. } => libc::EINVAL,
            Error::AlreadyExists { .. } => libc::EEXIST,
            Error::NotPermitted { .. } => libc::EPERM,
            Error::AccessDenied { .. } => libc::EACCES,
            Error::NoSpace { .. } => libc::ENOSPC,
            Error::BadHandle { .. } => libc::EBADF,
            Error::NoXattr { .. } => libc::ENODATA,
            Error::NotADirectory { .. } => libc::ENOTDIR,
            Error::IsADirectory { .. } => libc::EISDIR,
            Error::IsASymlink { .. } => libc::EINVAL,
            Error::Stale { .. } => libc::ESTALE,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Context { source, .. } => source.errno(),
        }
    }

    /// The process exit code of a CLI command that failed with this error. `exit::DAMAGE`
    /// is reserved for "verify found damage", a verify result, not an error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound { .. }
            | Error::NotFinished { .. }
            | Error::NotADatastore { .. }
            | Error::ChunkMissing { .. }
            | Error::ChunkCorrupt { .. }
            | Error::Corrupt { .. }
            | Error::Encrypted { .. }
            | Error::LockBusy { .. }
            | Error::StoreBusy { .. }
            | Error::InvalidVerifyState { .. }
            | Error::InvalidUtf8 { .. }
            | Error::TooLarge { .. }
            | Error::ReadOnly { .. }
            | Error::Unavailable { .. }
            | Error::InvalidInput { .. }
            | Error::AlreadyExists { .. }
            | Error::NotPermitted { .. }
            | Error::AccessDenied { .. }
            | Error::NoSpace { .. }
            | Error::BadHandle { .. }
            | Error::NoXattr { .. }
            | Error::NotADirectory { .. }
            | Error::IsADirectory { .. }
            | Error::IsASymlink { .. }
            | Error::Stale { .. }
            | Error::Io { .. } => exit::FAILURE,
            Error::Context { source, .. } => source.exit_code(),
        }
    }

    /// Wrap an I/O error with the object it happened on. A missing file becomes
    /// `NotFound`, so callers and users see one kind for "does not exist".
    pub fn io(what: impl fmt::Display, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                what: what.to_string(),
            }
        } else {
            Error::Io {
                what: what.to_string(),
                source: Arc::new(source),
            }
        }
    }

    /// A failure with no OS error behind it (a thread that panicked, a child that failed).
    pub fn other(what: impl fmt::Display, why: impl fmt::Display) -> Error {
        Error::Io {
            what: what.to_string(),
            source: Arc::new(io::Error::other(why.to_string())),
        }
    }

    /// Name the larger object the error happened in; the kind, and so the errno and the
    /// exit code, stay those of the error.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error::Context {
            what: what.to_string(),
            source: Box::new(self),
        }
    }

    /// Shorthands for the most common kinds.
    pub fn invalid(what: impl fmt::Display, why: impl fmt::Display) -> Error {
        Error::InvalidInput {
            what: what.to_string(),
            why: why.to_string(),
        }
    }

    pub fn not_found(what: impl fmt::Display) -> Error {
        Error::NotFound {
            what: what.to_string(),
        }
    }

    pub fn corrupt(what: impl fmt::Display, why: CorruptKind) -> Error {
        Error::Corrupt {
            what: what.to_string(),
            why,
        }
    }

    /// A broken format rule, described.
    pub fn format(what: impl fmt::Display, why: impl fmt::Display) -> Error {
        Error::corrupt(what, CorruptKind::Format(why.to_string()))
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
        assert!(matches!(e, Error::NotFound { .. }));
        assert_eq!(e.errno(), libc::ENOENT);
    }

    #[test]
    fn context_keeps_the_kind_errno_and_exit_code() {
        let d = Digest::of(b"x");
        let e = Error::ChunkCorrupt {
            digest: d,
            path: "/s/.chunks/x".into(),
            why: CorruptKind::DigestMismatch,
        }
        .context("vm/1/2024-01-01T00:00:00Z/a.img.fidx");
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(e.exit_code(), exit::FAILURE);
        assert!(matches!(
            e.kind(),
            Error::ChunkCorrupt {
                why: CorruptKind::DigestMismatch,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            format!(
                "vm/1/2024-01-01T00:00:00Z/a.img.fidx: chunk {d} (/s/.chunks/x): digest mismatch"
            )
        );
    }

    #[test]
    fn a_clone_keeps_the_errno_of_an_io_error() {
        let e = Error::io("f", io::Error::from_raw_os_error(libc::EXDEV));
        assert_eq!(e.clone().errno(), libc::EXDEV);
    }
}
