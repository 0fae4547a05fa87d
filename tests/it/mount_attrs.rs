//! The mount tells no lies about attributes and space. `chmod`, `chown` and `touch` on
//! `notes`, `verify_state`, group notes and read-only view files succeed only when they
//! ask for what `stat` already shows, else fail with EPERM (EROFS on a read-only mount)
//! and change nothing, in the view or on disk. `df`, `df -i` and `stat -f` report the
//! scratch space a user can fill, which follows the scratch files and is exactly what
//! writes can use. `mv` of a file from another file system onto notes fails cleanly
//! (it must unlink notes first), while `cp` and `>` save it (`cp -p` too, and says
//! that it could not keep the times).
//! The errno of every other change in every folder: `security.rs`; editors that chmod
//! their saves (vim, emacs) and `sed -i`: `editors.rs`, `mount.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;
use crate::mount_util::*;

const SNAP: &str = "vm/100/2024-05-02T08:11:33Z";

/// The files whose attributes are fixed: the editable ones and two read-only ones.
const FILES: [&str; 5] = [
    "vm/100/2024-05-02T08:11:33Z/notes",
    "vm/100/2024-05-02T08:11:33Z/verify_state",
    "vm/100/notes",
    "vm/100/2024-05-02T08:11:33Z/manifest.json",
    "vm/100/2024-05-02T08:11:33Z/drive-scsi0.img",
];

/// What `stat` shows of a file: none of it may change when a change is refused.
#[derive(Debug, PartialEq)]
struct Shown {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    atime: (i64, i64),
    size: u64,
}

fn shown(p: &Path) -> Shown {
    let md = fs::metadata(p).unwrap();
    Shown {
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec()),
        atime: (md.atime(), md.atime_nsec()),
        size: md.len(),
    }
}

/// Inode, mtime and bytes of what a save rewrites: the snapshot's manifest and the
/// group's notes file. Equal values mean no transaction ran, not even one that wrote
/// the same bytes.
fn on_disk(f: &Fixture) -> Vec<(u64, i64, i64, Vec<u8>)> {
    [
        f.ds.snapshot_path(&f.d1).join("index.json.blob"),
        f.ds.group_path(&f.d1.group).join("notes"),
    ]
    .iter()
    .map(|p| {
        let md = fs::metadata(p).unwrap();
        (md.ino(), md.mtime(), md.mtime_nsec(), fs::read(p).unwrap())
    })
    .collect()
}

/// The store's entries but its lock files.
fn store_without_locks(f: &Fixture) -> BTreeMap<PathBuf, String> {
    let mut all = crate::security::checksums(&f.store);
    all.retain(|p, _| !p.starts_with(".locks"));
    all
}

/// The fixture with group notes on disk, so their file can be watched too.
fn store(tmp: &TempDir) -> Fixture {
    let f = fixture(tmp);
    f.ds.set_group_notes(&f.d1.group, b"group\n").unwrap();
    f
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn chmod_chown_and_touch_succeed_for_the_values_stat_shows_and_fail_with_eperm_else() {
    let tmp = TempDir::new("attrs-eperm");
    let f = store(&tmp);
    let disk = on_disk(&f);
    let store_before = store_without_locks(&f);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let refusals = || m.log_text().matches("setattr refused: ").count();
    for rel in FILES {
        let p = m.path(rel);
        let st = shown(&p);
        let other_mode = if st.mode & 0o777 == 0o644 {
            0o600
        } else {
            0o644
        };
        let refused = [
            format!("chmod {other_mode:o} {}", q(&p)),
            format!("chmod u+x {}", q(&p)),
            format!("chown {} {}", st.uid + 1, q(&p)),
            format!("chown :{} {}", st.gid + 1, q(&p)),
            format!("touch {}", q(&p)),
            format!("touch -d 2001-01-01 {}", q(&p)),
            format!("touch -a {}", q(&p)),
        ];
        let mut accepted = vec![
            format!("chmod {:o} {}", st.mode & 0o7777, q(&p)),
            format!("chown {}:{} {}", st.uid, st.gid, q(&p)),
        ];
        if st.mode & 0o200 != 0 {
            // What vim, joe and mg do on their write handle after a save.
            accepted.push(format!(
                "python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); \
                 os.fchmod(fd, {:#o}); os.fchown(fd, {}, {}); os.close(fd)' {}",
                st.mode,
                st.uid,
                st.gid,
                q(&p)
            ));
        }
        for cmd in &refused {
            let logged = refusals();
            let out = sh(cmd);
            let err = fails(&out);
            // touch opens the file for writing first and, when a read-only file refuses
            // that (EACCES), reports that error after its utimensat was refused too.
            let want = if cmd.starts_with("touch") && st.mode & 0o200 == 0 {
                "Permission denied"
            } else {
                "Operation not permitted"
            };
            assert!(err.contains(want), "{cmd}: {err}");
            assert!(refusals() > logged, "{cmd}: logged\n{}", m.log_text());
            assert_eq!(shown(&p), st, "{cmd}");
            assert_eq!(on_disk(&f), disk, "{cmd}: nothing rewritten");
        }
        for cmd in &accepted {
            ok(&sh(cmd));
            assert_eq!(shown(&p), st, "{cmd}");
            assert_eq!(on_disk(&f), disk, "{cmd}: nothing rewritten");
        }
    }
    // The log names the file and says why.
    let log = m.log_text();
    for line in [
        format!("notes of snapshot {SNAP}: its mode cannot become 0600: it stays 0644"),
        format!("verify_state of snapshot {SNAP}: its owner cannot become uid 1"),
        "notes of group vm/100: its times cannot be set: they are those of its last save"
            .to_string(),
        format!("{SNAP}/manifest.json: its mode cannot become 0644: it stays 0444"),
    ] {
        assert!(log.contains(&line), "{line:?} in\n{log}");
    }
    assert_eq!(m.commits(), 0, "no save; log:\n{log}");
    m.unmount();
    assert_eq!(
        store_without_locks(&f),
        store_before,
        "the store is untouched"
    );
}

#[test]
fn a_read_only_mount_refuses_attribute_changes_with_erofs_and_has_no_space_available() {
    let tmp = TempDir::new("attrs-ro");
    let f = store(&tmp);
    let disk = on_disk(&f);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &["-o", "ro"]);
    for rel in FILES {
        let p = m.path(rel);
        let st = shown(&p);
        assert_eq!(st.mode & 0o222, 0, "{rel}: no write bits");
        // The kernel answers these itself: even a chmod to the mode shown changes a
        // read-only file system, so it is refused too.
        for cmd in [
            format!("chmod {:o} {}", st.mode & 0o7777, q(&p)),
            format!("chmod 600 {}", q(&p)),
            format!("chown {}:{} {}", st.uid, st.gid, q(&p)),
            format!("chown {} {}", st.uid + 1, q(&p)),
            format!("touch {}", q(&p)),
            format!("touch -d 2001-01-01 {}", q(&p)),
        ] {
            let err = fails(&sh(&cmd));
            assert!(err.contains("Read-only file system"), "{cmd}: {err}");
            assert_eq!(shown(&p), st, "{cmd}");
        }
    }
    let space = Space::of(&m.mp);
    assert_eq!(
        space,
        Space {
            bsize: 4096,
            blocks: 4096,
            bfree: 4096,
            bavail: 0,
            files: 64,
            ffree: 64,
        },
        "nothing used, nothing available"
    );
    let df = df_row(&m.mp, &["-B1"]);
    assert_eq!(df[..3], [16 << 20, 0, 0], "df: size, used, available");
    assert_eq!(on_disk(&f), disk);
    m.unmount();
}

/// The statfs numbers, as `stat -f` prints them.
#[derive(Debug, PartialEq, Clone, Copy)]
struct Space {
    bsize: u64,
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
}

impl Space {
    fn of(mp: &Path) -> Space {
        let out = ok(&sh(&format!("stat -f -c '%S %b %f %a %c %d' {}", q(mp))));
        let n: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
        Space {
            bsize: n[0],
            blocks: n[1],
            bfree: n[2],
            bavail: n[3],
            files: n[4],
            ffree: n[5],
        }
    }
}

/// The numbers of `df ARGS MP`'s row: size, used, available (or, with `-i`, inodes,
/// used, free).
fn df_row(mp: &Path, args: &[&str]) -> Vec<u64> {
    let out = ok(&sh(&format!("df {} {}", args.join(" "), q(mp))));
    let row = out.lines().nth(1).unwrap_or_else(|| panic!("df: {out}"));
    row.split_whitespace()
        .skip(1)
        .take(3)
        .map(|w| w.parse().unwrap())
        .collect()
}

/// Scratch capacity of a mount (`src/vfs/scratch.rs`).
const CAPACITY: u64 = 16 << 20;
const SLOTS: u64 = 64;

/// What statfs must show with `bytes` of scratch content in `files` names.
fn expected_space(bytes: u64, files: u64) -> Space {
    Space {
        bsize: 4096,
        blocks: CAPACITY / 4096,
        bfree: (CAPACITY - bytes) / 4096,
        bavail: (CAPACITY - bytes) / 4096,
        files: SLOTS,
        ffree: SLOTS - files,
    }
}

#[test]
fn df_shows_the_scratch_space_writes_can_fill_and_follows_scratch_files() {
    let tmp = TempDir::new("attrs-df");
    let f = store(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let snap = m.path(SNAP);
    let group = m.path("vm/100");
    assert_eq!(Space::of(&m.mp), expected_space(0, 0));
    assert_eq!(df_row(&m.mp, &["-B1"]), [CAPACITY, 0, CAPACITY]);
    assert_eq!(df_row(&m.mp, &["-i"]), [SLOTS, 0, SLOTS]);

    // Scratch files of any folder share the mount's budget.
    let (a, b) = (snap.join("a.swp"), group.join("b~"));
    fs::write(&a, pseudo_random((1 << 20) + 1, 1)).unwrap();
    fs::write(&b, b"abc").unwrap();
    let used = (1 << 20) + 4;
    assert_eq!(Space::of(&m.mp), expected_space(used, 2));
    let free = (CAPACITY - used) / 4096 * 4096;
    assert_eq!(df_row(&m.mp, &["-B1"]), [CAPACITY, CAPACITY - free, free]);
    assert_eq!(df_row(&m.mp, &["-i"]), [SLOTS, 2, SLOTS - 2]);
    // Saves go to the datastore and take none of it.
    ok(&sh(&format!("echo saved > {}", q(&snap.join("notes")))));
    assert_eq!(notes_of(&f, &f.d1), "saved\n");
    assert_eq!(Space::of(&m.mp), expected_space(used, 2));

    // Deleted, the space comes back (the bytes once the kernel has released the last
    // handle, which it does after close returns).
    fs::remove_file(&a).unwrap();
    fs::remove_file(&b).unwrap();
    assert!(
        poll(10, || Space::of(&m.mp) == expected_space(0, 0)),
        "{:?}",
        Space::of(&m.mp)
    );
    // An unlinked file frees its name at once and its bytes when closed.
    {
        use std::io::Write;
        let c = snap.join("c");
        let mut open = fs::File::create(&c).unwrap();
        open.write_all(&[7; 40960]).unwrap();
        fs::remove_file(&c).unwrap();
        assert_eq!(Space::of(&m.mp), expected_space(40960, 0));
    }
    assert!(poll(10, || Space::of(&m.mp) == expected_space(0, 0)));

    // The numbers are true: what df says is available can be written, and no more;
    // the free names can be created, and no more.
    let big = snap.join("big");
    fs::write(&big, pseudo_random(CAPACITY as usize, 2)).unwrap();
    assert_eq!(Space::of(&m.mp), expected_space(CAPACITY, 1));
    assert_eq!(df_row(&m.mp, &["-B1"]), [CAPACITY, CAPACITY, 0]);
    let err = fs::write(snap.join("one-more"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    let free_names = Space::of(&m.mp).ffree;
    assert_eq!(
        free_names,
        SLOTS - 2,
        "the failed write's file exists, empty"
    );
    let names: Vec<PathBuf> = (0..free_names)
        .map(|i| group.join(format!("n{i}")))
        .collect();
    for n in &names {
        fs::File::create(n).unwrap();
    }
    let err = fs::File::create(group.join("too-many")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(df_row(&m.mp, &["-i"]), [SLOTS, SLOTS, 0]);
    for n in names.iter().chain([&big, &snap.join("one-more")]) {
        fs::remove_file(n).unwrap();
    }
    assert!(poll(10, || Space::of(&m.mp) == expected_space(0, 0)));
    m.unmount();
}

#[test]
fn mv_from_another_file_system_fails_cleanly_and_cp_or_redirection_saves_instead() {
    let tmp = TempDir::new("attrs-mv");
    let f = store(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let snap = m.path(SNAP);
    // Outside the mount, so on another file system: rename(2) gives EXDEV and mv
    // unlinks the target to copy in its place, which notes refuse.
    let src = tmp.join("elsewhere");
    let listing = |dir: &Path| {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let saved = |rel: &str| match rel {
        "notes" => notes_of(&f, &f.d1),
        "verify_state" => {
            let state = f.ds.load_manifest(&f.d1).unwrap().verify_state();
            format!("{:?}", state.map(|r| r.unwrap().ok))
        }
        _ => String::from_utf8(f.ds.group_notes(&f.d1.group).unwrap()).unwrap(),
    };
    for (target, by_cp, by_cat, want_cp, want_cat) in [
        (snap.join("notes"), "cp\n", "cat\n", "cp\n", "cat\n"),
        (
            snap.join("verify_state"),
            "failed\n",
            "ok\n",
            "Some(false)",
            "Some(true)",
        ),
        (m.path("vm/100/notes"), "cp\n", "cat\n", "cp\n", "cat\n"),
    ] {
        let rel = if target.starts_with(&snap) {
            target.file_name().unwrap().to_str().unwrap()
        } else {
            "group notes"
        };
        let dir = target.parent().unwrap();
        let names = listing(dir);
        let disk = on_disk(&f);
        let before = saved(rel);
        let commits = m.commits();

        fs::write(&src, by_cp).unwrap();
        let out = sh(&format!("mv {} {}", q(&src), q(&target)));
        let err = fails(&out);
        assert!(
            err.contains("unable to remove target: Operation not permitted"),
            "{rel}: {err}"
        );
        assert_eq!(
            fs::read_to_string(&src).unwrap(),
            by_cp,
            "{rel}: source kept"
        );
        assert_eq!(on_disk(&f), disk, "{rel}: nothing rewritten");
        assert_eq!(saved(rel), before, "{rel}");
        assert_eq!(listing(dir), names, "{rel}: nothing left behind");
        assert_eq!(m.commits(), commits, "{rel}");

        // What the README says to use instead: one save each.
        ok(&sh(&format!("cp {} {}", q(&src), q(&target))));
        assert_eq!(saved(rel), want_cp, "{rel}");
        fs::write(&src, by_cat).unwrap();
        ok(&sh(&format!("cat {} > {}", q(&src), q(&target))));
        assert_eq!(saved(rel), want_cat, "{rel}");
        assert_eq!(m.commits(), commits + 2, "{rel}: log\n{}", m.log_text());
    }
    // `cp -p` saves the content, then says the times could not be kept: true, not silent.
    fs::write(&src, "kept?\n").unwrap();
    let err = fails(&sh(&format!(
        "cp -p {} {}",
        q(&src),
        q(&snap.join("notes"))
    )));
    assert!(
        err.contains("preserving times") && err.contains("Operation not permitted"),
        "{err}"
    );
    assert_eq!(notes_of(&f, &f.d1), "kept?\n");
    m.unmount();
}
