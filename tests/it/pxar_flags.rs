//! `chattr` flags in pxar backups of folders: a regular file's and a folder's inode
//! flags go into their ENTRY flags with pxar's bit values (what `lsattr` shows, as the
//! PBS client stores them; a symlink's never), and `pbsfs restore` sets them again,
//! last, keeping the file system's own flags; one the restore may not set (IMMUTABLE
//! without CAP_LINUX_IMMUTABLE) is a warning naming the file, never the end of it.
//! Runs on /var/tmp (ext4 on the test machines): a file system refusing `chattr` fails
//! the test.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pbsfs::pxar::decoder::{Archive, Entry};
use pbsfs::pxar::format::{WITH_FLAG_IMMUTABLE, WITH_FLAG_NOATIME, WITH_FLAG_NODUMP};

use crate::common::*;
use crate::pxar_backup::backup;

const TIME: &str = "2024-06-07T08:09:10Z";
const SNAP: &str = "host/flags/2024-06-07T08:09:10Z";

fn run(cmd: &str, args: &[&OsStr]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?}: {}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn chattr(change: &str, p: &Path) {
    run("chattr", &[OsStr::new(change), p.as_os_str()]);
}

/// The attribute letters `lsattr -d` shows for `p` (`-` for unset ones).
fn lsattr(p: &Path) -> String {
    let out = run("lsattr", &[OsStr::new("-d"), p.as_os_str()]);
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Takes IMMUTABLE off again on drop (declared after the scratch folder, so it runs
/// first): a failed assertion must not leave files nobody can delete.
struct Unlock(Vec<PathBuf>);

impl Drop for Unlock {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).output();
        }
    }
}

fn entry(ar: &Archive<Vec<u8>>, path: &str) -> Entry {
    ar.lookup_path(path.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("{path} in the archive"))
}

#[test]
fn chattr_flags_are_stored_in_the_entry_and_restored() {
    let tmp = TempDir::new("pxar-flags");
    assert!(
        tmp.path().starts_with("/var/tmp"),
        "{}",
        tmp.path().display()
    );
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    std::fs::create_dir_all(src.join("dir/inner")).unwrap();
    std::fs::write(src.join("dir/inner/leaf"), b"leaf\n").unwrap();
    std::fs::write(src.join("file"), b"flagged content\n").unwrap();
    std::fs::write(src.join("plain"), b"no flags\n").unwrap();
    std::os::unix::fs::symlink("file", src.join("link")).unwrap();
    std::fs::write(src.join("locked"), b"immutable\n").unwrap();
    // Folder flags after its content exists: nothing below inherits them.
    for p in [src.join("file"), src.join("dir")] {
        chattr("+d", &p);
        chattr("+A", &p);
        let attrs = lsattr(&p);
        assert!(attrs.contains('d') && attrs.contains('A'), "{attrs}");
    }
    let _unlock = Unlock(vec![src.join("locked")]);
    chattr("+i", &src.join("locked"));

    let out = backup(
        &store,
        "host/flags",
        &[format!("root.pxar:{}", s(&src))],
        &["--backup-time", TIME],
    );
    let report = ok(&out);
    assert!(
        !stderr(&out).contains("chattr"),
        "{report}\n{}",
        stderr(&out)
    );

    // The ENTRY flags, decoded from the stored stream.
    let raw = ok_bytes(pbsfs(&["cat", s(&store), SNAP, "root.pxar"]));
    let ar = Archive::open(raw, None, "root.pxar").unwrap();
    let both = WITH_FLAG_NODUMP | WITH_FLAG_NOATIME;
    assert_eq!(both, 0x0010_0000 | 0x0002_0000);
    assert_eq!(entry(&ar, "file").stat.flags, both);
    assert_eq!(entry(&ar, "dir").stat.flags, both);
    assert_eq!(entry(&ar, "locked").stat.flags, WITH_FLAG_IMMUTABLE);
    assert_eq!(WITH_FLAG_IMMUTABLE, 0x0040_0000);
    for plain in ["plain", "link", "dir/inner", "dir/inner/leaf"] {
        assert_eq!(entry(&ar, plain).stat.flags, 0, "{plain}");
    }
    assert_eq!(ar.root().unwrap().stat.flags, 0);

    // Restore: the flags back, the file system's own ones (ext4's `e`) kept, mtimes
    // untouched by setting them, nothing inherited from the flagged folder.
    let dst = tmp.join("restored");
    let out = pbsfs(&["restore", s(&store), SNAP, "root.pxar", s(&dst)]);
    let _unlock_restored = Unlock(vec![dst.join("locked")]);
    ok(&out);
    assert!(!stderr(&out).contains("chattr"), "{}", stderr(&out));
    for p in ["file", "dir"] {
        let (was, now) = (lsattr(&src.join(p)), lsattr(&dst.join(p)));
        assert!(now.contains('d') && now.contains('A'), "{p}: {now}");
        assert_eq!(now, was, "{p}");
        let (a, b) = (
            std::fs::metadata(src.join(p)).unwrap(),
            std::fs::metadata(dst.join(p)).unwrap(),
        );
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{p}"
        );
    }
    assert_eq!(
        std::fs::read(dst.join("file")).unwrap(),
        b"flagged content\n"
    );
    assert!(lsattr(&dst.join("locked")).contains('i'));
    for p in ["plain", "dir/inner", "dir/inner/leaf"] {
        let now = lsattr(&dst.join(p));
        assert!(!now.contains('d') && !now.contains('A'), "{p}: {now}");
    }
    chattr("-i", &dst.join("locked"));

    // Without CAP_LINUX_IMMUTABLE the IMMUTABLE flag cannot be set: a warning naming
    // the file; everything else restored, the other flags included.
    let dst2 = tmp.join("restored-nocap");
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-linux_immutable", "--"])
        .arg(BIN)
        .args(["restore", s(&store), SNAP, "root.pxar", s(&dst2)])
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .unwrap();
    let _unlock_nocap = Unlock(vec![dst2.join("locked")]);
    ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("locked") && err.contains("file attributes (chattr)"),
        "{err}"
    );
    assert!(!lsattr(&dst2.join("locked")).contains('i'));
    assert_eq!(std::fs::read(dst2.join("locked")).unwrap(), b"immutable\n");
    let now = lsattr(&dst2.join("dir"));
    assert!(now.contains('d') && now.contains('A'), "{now}");
    assert!(lsattr(&dst2.join("file")).contains('d'));
}
