//! Test support for the decoder: an in-memory `ReadAt` that counts reads (and can fail
//! one), the sample archive with every entry kind and attribute, a walk that touches
//! every entry through every API, and the check of a refusal. The writer is in
//! `builder.rs`.

mod bad;
mod builder;
mod good;

pub use builder::*;

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::util::error::CorruptKind;

pub const WHAT: &str = "test/archive.pxar";

/// An in-memory stream that counts `read_at` calls and bytes.
pub struct Buf {
    pub data: Vec<u8>,
    pub reads: AtomicU64,
    pub bytes: AtomicU64,
    /// A read touching this offset fails with an I/O error (`u64::MAX`: none).
    pub fail_at: AtomicU64,
}

impl Buf {
    pub fn new(data: Vec<u8>) -> Buf {
        Buf {
            data,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            fail_at: AtomicU64::new(u64::MAX),
        }
    }

    pub fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl ReadAt for Buf {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let fail = self.fail_at.load(Ordering::Relaxed);
        if (offset..offset + buf.len() as u64).contains(&fail) {
            return Err(Error::other("test stream", "injected read failure"));
        }
        self.data[..].read_at(offset, buf)
    }
}

pub use crate::util::testdata::pseudo_random as data;

/// Every kind of entry and every attribute, names sorted.
pub fn sample() -> N {
    let mut d = dir("dir", vec![dir("empty", vec![]), file("f", b"hello")]);
    d.stat.mode = S_IFDIR | 0o2775;
    d.attrs.acl = Acl {
        users: vec![AclUser {
            uid: 1001,
            perms: 6,
        }],
        groups: vec![
            AclGroup { gid: 50, perms: 4 },
            AclGroup { gid: 51, perms: 5 },
        ],
        group_obj: Some(5),
        default: Some(AclDefault {
            user_obj: 7,
            group_obj: 5,
            other: 0,
            mask: 7,
        }),
        default_users: vec![AclUser {
            uid: 1002,
            perms: 7,
        }],
        default_groups: vec![AclGroup { gid: 52, perms: 1 }],
    };
    let mut f = file("file", &data(5000, 7));
    f.stat.mode = S_IFREG | 0o4755;
    f.attrs.xattrs = vec![
        (b"trusted.b".to_vec(), vec![]),
        (b"user.a".to_vec(), b"v\0with nul".to_vec()),
    ];
    f.attrs.fcaps = Some(vec![1, 0, 0, 2, 0x20, 0, 0, 0]);
    f.attrs.projid = Some(42);
    let mut old = file("old", b"");
    old.stat.mtime_secs = 5;
    old.stat.mtime_nanos = 999_999_999;
    let mut root = dir(
        "",
        vec![
            device("blk", S_IFBLK | 0o660, 8, 0),
            device("dev", S_IFCHR | 0o620, 4, 1),
            d,
            special("fifo", S_IFIFO | 0o600),
            f,
            hardlink("link", Link::To("/file")),
            old,
            special("sock", S_IFSOCK | 0o755),
            symlink("sym", "file"),
        ],
    );
    root.attrs.xattrs = vec![(b"user.root".to_vec(), b"1".to_vec())];
    root
}

/// Visit every entry through `list`, `lookup`, `read` and `hardlink_target`; the number
/// of entries (the root included).
pub fn walk(ar: &Archive<Buf>) -> Result<usize> {
    let mut stack = vec![ar.root()?];
    let mut count = 1;
    let mut buf = vec![0u8; 1000];
    while let Some(d) = stack.pop() {
        for e in ar.list(&d)? {
            count += 1;
            assert_eq!(
                ar.lookup(&d, &e.name)?.as_ref(),
                Some(&e),
                "lookup finds what list gives"
            );
            assert_eq!(ar.entry_at(e.offset, e.end())?, e, "decoded again alone");
            let file = match &e.kind {
                EntryKind::Directory(_) => {
                    stack.push(e.clone());
                    None
                }
                EntryKind::Hardlink { .. } => Some(ar.hardlink_target(&e)?)
                    .filter(|t| matches!(t.kind, EntryKind::File { .. })),
                EntryKind::File { .. } => Some(e.clone()),
                _ => None,
            };
            if let Some(f) = file {
                let c = ar.content(&f)?;
                let mut off = 0;
                loop {
                    let n = ar.read_content(&c, off, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    off += n as u64;
                }
                assert_eq!(off, c.len());
            }
        }
    }
    Ok(count)
}

/// `r` failed as corrupt input, naming the archive and offset `off` (any when `None`).
#[track_caller]
pub fn assert_corrupt<T: std::fmt::Debug>(r: Result<T>, off: Option<u64>) -> String {
    let e = r.expect_err("bad input must be refused");
    let msg = e.to_string();
    assert!(
        matches!(
            e.kind(),
            Error::Corrupt {
                why: CorruptKind::Format(_),
                ..
            }
        ),
        "not a format error: {msg}"
    );
    assert_eq!(e.errno(), libc::EIO, "{msg}");
    assert_eq!(e.exit_code(), crate::util::error::exit::FAILURE, "{msg}");
    assert!(msg.contains(WHAT), "{msg}");
    match off {
        Some(off) => assert!(
            msg.contains(&format!("at offset {off}:")),
            "expected offset {off}: {msg}"
        ),
        None => assert!(msg.contains(" at offset "), "{msg}"),
    }
    msg
}
