//! Who may do what through a mount, and what a mount may do to the datastore: other
//! users are refused everything unless `allow_other` is asked for (then the files' modes
//! decide, as `mount::allow_other_comes_with_permission_checks_so_other_users_cannot_write`
//! shows for every kind of edit); every change the view does not offer fails with its
//! exact errno in every kind of folder; and browsing plus editing change nothing in the
//! store but manifests, group notes and lock files. Restore escapes: `restore_escapes.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::mount_util::*;

/// Runs each `OP PATH` pair of its arguments and prints one errno per pair (0: done).
/// Python reports the errno of exactly the syscall that failed, whoever runs it.
const PROBE: &str = r#"
import os, sys
def create(p):
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    os.unlink(p)  # a scratch file: leave none behind
def read(p):
    with open(p, 'rb') as f:
        f.read()
def write(p):
    with open(p, 'w') as f:
        f.write('forged\n')
OPS = {
    'ls': os.listdir,
    'stat': os.stat,
    'read': read,
    'write': write,
    'create': create,
    'mkdir': lambda p: os.mkdir(p + '.new'),
    'symlink': lambda p: os.symlink('target', p + '.new'),
    'mkfifo': lambda p: os.mkfifo(p + '.new'),
    'unlink': os.unlink,
    'rmdir': os.rmdir,
    'rename': lambda p: os.rename(p, p + '.renamed'),
    'link': lambda p: os.link(p, p + '.link'),
    'chmod': lambda p: os.chmod(p, 0o600),
    'chown': lambda p: os.lchown(p, 1, 1),
    'utime': lambda p: os.utime(p, (0, 0), follow_symlinks=False),
    'openw': lambda p: os.close(os.open(p, os.O_WRONLY)),
    'truncate': lambda p: os.truncate(p, 0),
}
args = sys.argv[1:]
for op, p in zip(args[::2], args[1::2]):
    try:
        OPS[op](p)
        print(0)
    except OSError as e:
        print(e.errno)
"#;

/// Run the probe's `ops` as root, or as `nobody` (uid and gid 65534, no groups); one
/// errno per op.
pub(crate) fn probe(nobody: bool, ops: &[(&str, PathBuf)]) -> Vec<i32> {
    let mut cmd = if nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
        ]);
        c
    } else {
        Command::new("/usr/bin/python3")
    };
    cmd.args(["-I", "-c", PROBE]);
    for (op, p) in ops {
        cmd.arg(op).arg(p);
    }
    let out = ok(&cmd.output().unwrap());
    let errnos: Vec<i32> = out.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(errnos.len(), ops.len(), "{out}");
    errnos
}

/// Every entry below `root`, symlinks not followed: kind, mode, owner, size and the
/// digest of its content or link target.
pub(crate) fn checksums(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let what = if ft.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link {:?}", fs::read_link(&p).unwrap())
            } else if ft.is_file() {
                format!("file {}", pbsfs::Digest::of(&fs::read(&p).unwrap()))
            } else {
                format!("special {:o}", md.mode())
            };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let line = format!(
                "{what} {:o} {}:{} {}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.len()
            );
            out.insert(rel, line);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

const SNAP: &str = "vm/100/2024-05-02T08:11:33Z";
const PXAR_SNAP: &str = "host/files/2024-05-04T08:11:33Z";

/// The mount fixture plus `host/files` holding a pxar tree (a file, a folder, a
/// symlink); the mount point's parents are reachable by other users, so a refusal
/// can only come from the mount itself.
fn store_with_pxar(tmp: &TempDir) -> Fixture {
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let f = fixture(tmp);
    let src = tmp.join("tree");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a"), pseudo_random(70_000, 3)).unwrap();
    fs::write(src.join("sub/b"), b"b\n").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("abs")).unwrap();
    let arg = format!("root.pxar:{}", s(&src));
    let time = "2024-05-04T08:11:33Z";
    ok(&pbsfs(&[
        "backup",
        s(&f.store),
        "host/files",
        &arg,
        "--backup-time",
        time,
    ]));
    f
}

#[test]
fn other_users_are_refused_unless_allow_other_and_then_modes_decide() {
    let tmp = TempDir::new("sec-users");
    let f = store_with_pxar(&tmp);
    let snap_rel = format!("{SNAP}/notes");
    let ops = |mp: &Path| {
        vec![
            ("ls", mp.to_path_buf()),
            ("stat", mp.join(SNAP)),
            ("read", mp.join(&snap_rel)),
            ("read", mp.join(format!("{PXAR_SNAP}/root.pxar/a"))),
            ("write", mp.join(&snap_rel)),
            ("write", mp.join("vm/100/notes")),
            ("create", mp.join(format!("{SNAP}/scratch"))),
        ]
    };
    // The refusal must come from the mount: the folder holding it is open to all.
    let mp = tmp.join("mnt");
    fs::create_dir_all(&mp).unwrap();
    assert_eq!(probe(true, &[("ls", tmp.0.clone())]), [0]);

    let m = Mounted::start(&f.store, &mp, &[]);
    let line = mountinfo_line(&m.mp);
    assert!(!line.contains("allow_other"), "{line}");
    let errnos = probe(true, &ops(&m.mp));
    assert!(
        errnos.iter().all(|&e| e == libc::EACCES),
        "every access by another user: EACCES, got {errnos:?}"
    );
    // The mounting user does all of it.
    let root = probe(false, &ops(&m.mp)[..4]);
    assert_eq!(root, [0, 0, 0, 0]);
    m.unmount();

    // Asked for, other users read what the modes let them read and write nothing.
    let m = Mounted::start(&f.store, &mp, &["-o", "allow_other"]);
    let errnos = probe(true, &ops(&m.mp));
    let eacces = libc::EACCES;
    assert_eq!(errnos, [0, 0, 0, 0, eacces, eacces, eacces]);
    assert_eq!(m.commits(), 0, "log:\n{}", m.log_text());
    m.unmount();
    assert_eq!(notes_of(&f, &f.d1), "first\n");
    assert!(!f.store.join("vm/100/notes").exists());
}

fn mountinfo_line(mp: &Path) -> String {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == mp.to_str())
        .unwrap()
        .to_string()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    /// notes and verify_state: editable content, fixed attributes.
    Meta,
    ReadOnly,
    Symlink,
}

/// What an operation on an entry of `kind` gives through a writable mount as its owner.
/// The kernel answers some before asking (unlink of a folder: EISDIR; rmdir of a file:
/// ENOTDIR); the view refuses what it does not offer with EPERM and writes to read-only
/// content with EACCES; modes, owners and times of everything but scratch files are
/// fixed, so a change to another value is refused with EPERM, notes and verify_state
/// included (a change to the value `stat` shows succeeds: `mount_attrs.rs`).
fn expected(op: &str, kind: Kind) -> i32 {
    use Kind::*;
    match (op, kind) {
        ("unlink", Dir) => libc::EISDIR,
        ("rmdir", Dir) => libc::EPERM,
        ("rmdir", _) => libc::ENOTDIR,
        ("unlink" | "rename" | "link", _) => libc::EPERM,
        ("chmod" | "chown" | "utime", _) => libc::EPERM,
        ("openw", Meta) => 0,
        ("openw" | "truncate", ReadOnly) => libc::EACCES,
        _ => panic!("no expectation for {op} on {kind:?}"),
    }
}

#[test]
fn every_change_but_notes_verify_state_and_scratch_files_is_refused_with_its_errno() {
    let tmp = TempDir::new("sec-refuse");
    let f = store_with_pxar(&tmp);
    let before = checksums(&f.store);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let pxar_root = format!("{PXAR_SNAP}/root.pxar");
    let pxar_sub = format!("{PXAR_SNAP}/root.pxar/sub");
    // Every kind of folder of the view: (path, takes scratch files).
    let dirs = [
        ("", false),
        ("ns", false),
        ("ns/prod", false),
        ("ns/prod/host", false),
        ("vm", false),
        ("vm/100", true),
        (SNAP, true),
        ("vm/100/latest/", true),
        (PXAR_SNAP, true),
        (pxar_root.as_str(), false),
        (pxar_sub.as_str(), false),
    ];
    let mut ops: Vec<(&str, PathBuf)> = Vec::new();
    let mut want: Vec<i32> = Vec::new();
    for (dir, scratch) in dirs {
        let d = m.path(dir);
        let new = d.join("new");
        for op in ["create", "mkdir", "symlink", "mkfifo"] {
            ops.push((op, new.clone()));
            want.push(match op {
                "create" if scratch => 0,
                "create" => libc::EACCES,
                _ => libc::EPERM,
            });
        }
        let in_pxar = dir.contains(".pxar");
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let kind = if md.is_dir() {
                Kind::Dir
            } else if md.file_type().is_symlink() {
                Kind::Symlink
            } else if !in_pxar && (name == "notes" || name == "verify_state") {
                Kind::Meta
            } else {
                Kind::ReadOnly
            };
            let mut list = vec!["unlink", "rmdir", "rename", "link"];
            if kind != Kind::Symlink {
                // chmod and truncate follow a symlink: its target is tried on its own.
                list.extend(["chmod", "chown", "utime"]);
            }
            if kind == Kind::ReadOnly {
                list.extend(["openw", "truncate"]);
            }
            if kind == Kind::Meta {
                // Opened for writing, nothing written: no save.
                list.push("openw");
            }
            for op in list {
                ops.push((op, p.clone()));
                want.push(expected(op, kind));
            }
        }
    }
    // Scratch files move only between folders that take them, and replace only
    // notes and verify_state.
    let scratch = m.path(&format!("{SNAP}/scratch"));
    fs::write(&scratch, b"x").unwrap();
    for (to, errno) in [
        (m.path("vm/scratch"), libc::EACCES),
        (
            m.path(&format!("{PXAR_SNAP}/root.pxar/scratch")),
            libc::EACCES,
        ),
        (m.path(&format!("{SNAP}/manifest.json")), libc::EPERM),
        (m.path(&format!("{SNAP}/drive-scsi0.img")), libc::EPERM),
    ] {
        let e = fs::rename(&scratch, &to).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(errno), "{scratch:?} -> {to:?}: {e}");
    }
    fs::remove_file(&scratch).unwrap();

    let got = probe(false, &ops);
    let wrong: Vec<String> = ops
        .iter()
        .zip(got.iter().zip(&want))
        .filter(|(_, (g, w))| g != w)
        .map(|((op, p), (g, w))| format!("{op} {}: got {g}, want {w}", p.display()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} operations:\n{}",
        wrong.len(),
        ops.len(),
        wrong.join("\n")
    );
    assert!(ops.len() > 150, "the matrix covers the view: {}", ops.len());
    assert_eq!(m.commits(), 0, "no save; log:\n{}", m.log_text());
    m.unmount();
    assert_eq!(
        without_locks(&checksums(&f.store)),
        without_locks(&before),
        "the store is untouched"
    );
}

/// The entries that are not lock files (`.locks/`, the datastore `.lock`).
fn without_locks(t: &BTreeMap<PathBuf, String>) -> BTreeMap<PathBuf, String> {
    t.iter()
        .filter(|(p, _)| !p.starts_with(".locks"))
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect()
}

#[test]
fn browsing_and_editing_change_only_manifests_group_notes_and_lock_files() {
    let tmp = TempDir::new("sec-store");
    let f = store_with_pxar(&tmp);
    let before = checksums(&f.store);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let mp = s(&m.mp).to_string();
    let tar = tmp.join("view.tar");
    // Browsing: every listing and attribute, every byte, and an archiver's walk.
    for cmd in [
        format!("ls -lRa {mp} > /dev/null"),
        format!("find {mp} -type f -exec cat {{}} + > /dev/null"),
        format!("tar -C {mp} -cf {} .", s(&tar)),
        format!("du -a {mp} > /dev/null"),
    ] {
        ok(&sh(&cmd));
    }
    assert!(fs::metadata(&tar).unwrap().len() > 1 << 20);
    // Editing: snapshot notes (in place and by an editor's rename), verify_state,
    // group notes, and a scratch file left behind.
    let snap = format!("{mp}/{SNAP}");
    for cmd in [
        format!("printf 'edited\\n' > {snap}/notes"),
        format!("sed -i 's/edited/by sed/' {snap}/notes"),
        format!("echo ok > {snap}/verify_state"),
        format!("printf 'group\\n' > {mp}/vm/100/notes"),
        format!("printf 'pxar\\n' > {mp}/{PXAR_SNAP}/notes"),
        format!("printf 'left\\n' > {snap}/scratch"),
    ] {
        ok(&sh(&cmd));
    }
    assert_eq!(
        fs::read_to_string(format!("{snap}/notes")).unwrap(),
        "by sed\n"
    );
    m.unmount();

    let after = checksums(&f.store);
    let mut changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    changed.sort();
    changed.dedup();
    let allowed = |p: &Path| {
        p.starts_with(".locks")
            || p.file_name().is_some_and(|n| n == "index.json.blob")
            || (p.file_name().is_some_and(|n| n == "notes")
                && before.contains_key(&p.with_file_name("owner")))
    };
    let foreign: Vec<String> = changed
        .iter()
        .filter(|p| !allowed(p))
        .map(|p| {
            format!(
                "{}: {:?} -> {:?}",
                p.display(),
                before.get(*p),
                after.get(*p)
            )
        })
        .collect();
    assert!(
        foreign.is_empty(),
        "changed in the store:\n{}",
        foreign.join("\n")
    );
    // And what was edited did change: the test sees changes where there are some.
    for p in [
        format!("{SNAP}/index.json.blob"),
        format!("{PXAR_SNAP}/index.json.blob"),
        "vm/100/notes".to_string(),
    ] {
        assert!(
            changed.contains(&&PathBuf::from(&p)),
            "{p} changed: {changed:?}"
        );
    }
    let unedited = f.ds.snapshot_path(&f.d2).join("index.json.blob");
    let rel = unedited.strip_prefix(&f.store).unwrap();
    assert!(!changed.contains(&&rel.to_path_buf()), "{rel:?}");
    assert_eq!(notes_of(&f, &f.d1), "by sed\n");
}
