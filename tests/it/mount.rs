//! Real mounts: the view (`ls -lR`, sizes, times, stable inodes, df), reads and copies
//! (`cmp`, tar, cp, rsync), saves through every tool, the background mount, read-only
//! mounts, signals and `kill -9`. Bad chunks are in `corruption`, concurrent edits in
//! `concurrency`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::{describe, fails, fails_with, ok, pbsfs, stderr, TempDir};
use crate::mount_util::*;

#[test]
fn the_view_lists_every_group_snapshot_and_file_with_sizes_and_times() {
    let tmp = TempDir::new("mount-view");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let ls = ok(&sh(&format!("ls -lR {}", m.mp.display())));
    for want in [
        "vm",
        "ct",
        "ns",
        "100",
        "200",
        "2024-05-02T08:11:33Z",
        "2024-05-03T08:11:33Z",
        "drive-scsi0.img",
        "drive-scsi1.img",
        "qemu-server.conf",
        "pct.conf",
        "manifest.json",
        "verify_state",
        "notes",
        "owner",
        "latest -> 2024-05-03T08:11:33Z",
        "prod",
        "web",
        "disk.img",
    ] {
        assert!(ls.contains(want), "missing {want} in:\n{ls}");
    }
    let snap1 = m.path("vm/100/2024-05-02T08:11:33Z");
    let snap2 = m.path("vm/100/2024-05-03T08:11:33Z");
    // Sizes and times.
    assert_eq!(
        fs::metadata(snap1.join("drive-scsi0.img")).unwrap().len(),
        1 << 20
    );
    assert_eq!(
        fs::metadata(snap2.join("drive-scsi1.img")).unwrap().len(),
        f.img2.len() as u64
    );
    assert_eq!(
        fs::metadata(snap1.join("qemu-server.conf")).unwrap().len(),
        f.conf.len() as u64
    );
    assert_eq!(fs::metadata(&snap1).unwrap().mtime(), T1);
    assert_eq!(fs::metadata(m.path("vm/100")).unwrap().mtime(), T2);
    assert_eq!(fs::read(snap1.join("notes")).unwrap(), b"first\n");
    assert_eq!(fs::metadata(snap1.join("notes")).unwrap().len(), 6);
    assert_eq!(
        fs::metadata(snap1.join("notes")).unwrap().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(snap1.join("manifest.json")).unwrap().mode() & 0o777,
        0o444
    );
    assert_eq!(fs::read(snap1.join("verify_state")).unwrap(), b"");
    assert_eq!(fs::read(m.path("vm/100/owner")).unwrap(), b"root@pam\n");
    assert_eq!(
        fs::read(m.path("ns/prod/host/web/latest/disk.img"))
            .unwrap()
            .len(),
        5000
    );
    // Content.
    for (path, want) in [
        (snap1.join("drive-scsi0.img"), &f.img1),
        (snap2.join("drive-scsi0.img"), &f.img1),
        (snap2.join("drive-scsi1.img"), &f.img2),
    ] {
        let src = tmp.join("src");
        fs::write(&src, want).unwrap();
        let out = Command::new("cmp").arg(&path).arg(&src).output().unwrap();
        assert!(
            out.status.success(),
            "cmp {}: {}",
            path.display(),
            describe(&out)
        );
    }
    assert_eq!(fs::read(snap1.join("qemu-server.conf")).unwrap(), f.conf);
    // manifest.json parses and matches the store.
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(snap2.join("manifest.json")).unwrap()).unwrap();
    let m2 = f.ds.load_manifest(&f.d2).unwrap();
    assert_eq!(&json, &serde_json::Value::Object(m2.as_map().clone()));
    // Stable inodes, and df works.
    let ino = fs::metadata(snap1.join("drive-scsi0.img")).unwrap().ino();
    ok(&sh(&format!("ls -lR {} >/dev/null", m.mp.display())));
    assert_eq!(
        fs::metadata(snap1.join("drive-scsi0.img")).unwrap().ino(),
        ino
    );
    ok(&sh(&format!("df {}", m.mp.display())));
    m.unmount();
}

#[test]
fn background_mount_returns_when_ready_and_umount_ends_it() {
    let tmp = TempDir::new("mount-bg");
    let f = fixture(&tmp);
    let mp = tmp.join("mnt");
    fs::create_dir(&mp).unwrap();
    ok(&pbsfs(&[
        "mount",
        f.store.to_str().unwrap(),
        mp.to_str().unwrap(),
    ]));
    assert!(is_mounted(&mp));
    // Already answering: no polling needed.
    assert!(mp.join("vm/100/latest/notes").exists());
    ok(&pbsfs(&["umount", mp.to_str().unwrap()]));
    assert!(!is_mounted(&mp));
    // Errors before readiness are printed, exit 2.
    let inside = f.store.join("vm");
    let out = pbsfs(&["mount", f.store.to_str().unwrap(), inside.to_str().unwrap()]);
    let err = fails_with(&out, 2);
    assert!(err.contains("must not contain"), "{err}");
    let out = pbsfs(&[
        "mount",
        f.store.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        "bogus",
    ]);
    let err = fails_with(&out, 2);
    assert!(err.contains("bogus"), "{err}");
    assert!(!is_mounted(&mp));
}

/// Run `cmd` with bash in `dir` (HOME set to a scratch folder); returns the output.
/// bash, not dash: dash reports every write error as "I/O error".
fn sh_in(dir: &std::path::Path, home: &std::path::Path, cmd: &str) -> std::process::Output {
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env("HOME", home)
        .output()
        .unwrap()
}

#[test]
fn every_way_of_saving_notes_is_one_transaction_visible_when_the_tool_exits() {
    let tmp = TempDir::new("mount-saves");
    let f = fixture(&tmp);
    let home = tmp.join("home");
    fs::create_dir(&home).unwrap();
    fs::write(tmp.join("src.txt"), "copied\n").unwrap();
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let dir = m.path("vm/100/2024-05-02T08:11:33Z");
    let src = tmp.join("src.txt");
    let saves: Vec<(String, &str)> = vec![
        ("echo one > notes".into(), "one\n"),
        ("echo two >> notes".into(), "one\ntwo\n"),
        (format!("cp {} notes", src.display()), "copied\n"),
        ("echo teed | tee notes >/dev/null".into(), "teed\n"),
        ("sed -i s/teed/sedded/ notes".into(), "sedded\n"),
        ("printf moved > scratch && mv scratch notes".into(), "moved"),
        (
            "vim -es -c 's/moved/vimmed/' -c wq notes".into(),
            "vimmed\n",
        ),
        (
            "python3 -c \"open('notes','w').write('py\\n')\"".into(),
            "py\n",
        ),
    ];
    for (cmd, want) in &saves {
        let before = m.commits();
        let out = sh_in(&dir, &home, cmd);
        assert!(out.status.success(), "{cmd}: {}", describe(&out));
        // Visible to the library as soon as the tool has exited.
        assert_eq!(notes_of(&f, &f.d1), *want, "{cmd}");
        assert_eq!(
            fs::read_to_string(dir.join("notes")).unwrap(),
            *want,
            "{cmd}"
        );
        assert_eq!(
            m.commits(),
            before + 1,
            "{cmd}: one transaction\n{}",
            m.log_text()
        );
    }
    // Truncate-only saves commit at release, a moment later.
    for cmd in ["printf '' > notes", "truncate -s 0 notes"] {
        ok(&sh_in(&dir, &home, "echo full > notes"));
        // Not empty before: the poll below must see the truncation, not a leftover.
        assert_eq!(notes_of(&f, &f.d1), "full\n", "{cmd}");
        let before = m.commits();
        let out = sh_in(&dir, &home, cmd);
        assert!(out.status.success(), "{cmd}: {}", describe(&out));
        assert!(poll(10, || notes_of(&f, &f.d1).is_empty()), "{cmd}");
        assert!(
            poll(10, || m.commits() == before + 1),
            "{cmd}\n{}",
            m.log_text()
        );
    }
    // An open for write closed without a change commits nothing.
    let before = m.commits();
    let out = sh_in(
        &dir,
        &home,
        "python3 -c \"open('notes','r+').close()\"; : >> notes",
    );
    ok(&out);
    // A save still pending at release would be committed by the next open: read first.
    assert_eq!(fs::read_to_string(dir.join("notes")).unwrap(), "");
    assert_eq!(m.commits(), before, "log:\n{}", m.log_text());
    // Group notes.
    ok(&sh_in(&m.path("vm/100"), &home, "echo group > notes"));
    assert_eq!(f.ds.group_notes(&f.d1.group).unwrap(), b"group\n");
    // notes cannot be removed or renamed away.
    for cmd in ["rm notes", "mv notes other"] {
        let out = sh_in(&dir, &home, cmd);
        assert!(!out.status.success(), "{cmd}: {}", describe(&out));
        assert!(
            stderr(&out).contains("Operation not permitted"),
            "{cmd}: {}",
            describe(&out)
        );
    }
    // Scratch files are never stored: the one above was renamed away, so leave one behind
    // and look at what the snapshot folder holds.
    ok(&sh_in(&dir, &home, "printf left > scratch2"));
    assert_eq!(fs::read(dir.join("scratch2")).unwrap(), b"left");
    let mut stored: Vec<String> = fs::read_dir(f.ds.snapshot_path(&f.d1))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        [
            "drive-scsi0.img.fidx",
            "index.json.blob",
            "qemu-server.conf.blob"
        ]
    );
    m.unmount();
}

#[test]
fn verify_state_takes_words_and_json_and_refuses_garbage_without_touching_the_manifest() {
    let tmp = TempDir::new("mount-vs");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let dir = m.path("vm/100/2024-05-02T08:11:33Z");
    let vs = dir.join("verify_state");
    let state = || {
        f.ds.load_manifest(&f.d1)
            .unwrap()
            .verify_state()
            .map(|r| r.unwrap())
    };
    fs::write(&vs, "failed\n").unwrap();
    let s = state().unwrap();
    assert!(!s.ok);
    assert_eq!(
        pbsfs::util::upid::Upid::parse(&s.upid).unwrap().worker_type,
        "pbsfs-edit"
    );
    let text = fs::read_to_string(&vs).unwrap();
    assert!(
        text.starts_with("{\n  \"state\": \"failed\",\n  \"upid\": \"UPID:"),
        "{text}"
    );
    assert!(text.ends_with("}\n"));
    fs::write(&vs, " ok ").unwrap();
    assert!(state().unwrap().ok);
    let upid = pbsfs::util::upid::Upid::new("verify_snapshot", "x", "root@pam").to_string();
    fs::write(
        &vs,
        format!("{{\"state\": \"failed\", \"upid\": \"{upid}\"}}"),
    )
    .unwrap();
    assert_eq!(state().unwrap().upid, upid);
    // Garbage: the shell sees the write error; the manifest stays byte-identical.
    let blob = f.ds.snapshot_path(&f.d1).join("index.json.blob");
    let raw = fs::read(&blob).unwrap();
    let err = fails(&sh_in(&dir, tmp.path(), "echo garbage > verify_state"));
    assert!(err.contains("Invalid argument"), "{err}");
    // A program writing invalid JSON gets EINVAL from close().
    let out = sh_in(
        &dir,
        tmp.path(),
        "python3 -c \"f=open('verify_state','w'); f.write('{\\\"state\\\": 1}'); f.close()\"",
    );
    let err = fails(&out);
    assert!(err.contains("Invalid argument"), "{err}");
    // An open commits any closed, unreleased save of the file first: none may exist.
    fs::read(&vs).unwrap();
    assert_eq!(fs::read(&blob).unwrap(), raw, "manifest untouched");
    // Empty removes the key.
    fs::write(&vs, "").unwrap();
    assert!(poll(10, || state().is_none()));
    assert_eq!(fs::read(&vs).unwrap(), b"");
    m.unmount();
}

#[test]
fn a_read_only_mount_refuses_writes_with_erofs() {
    let tmp = TempDir::new("mount-ro");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &["-o", "ro"]);
    let dir = m.path("vm/100/2024-05-02T08:11:33Z");
    for cmd in [
        "echo x > notes",
        "echo ok > verify_state",
        "touch newfile",
        "echo g > ../notes",
    ] {
        let out = sh_in(&dir, tmp.path(), cmd);
        assert!(!out.status.success(), "{cmd}: {}", describe(&out));
        assert!(
            stderr(&out).contains("Read-only file system"),
            "{cmd}: {}",
            describe(&out)
        );
    }
    assert_eq!(
        fs::metadata(dir.join("notes")).unwrap().mode() & 0o777,
        0o444
    );
    assert_eq!(notes_of(&f, &f.d1), "first\n");
    assert_eq!(fs::read(dir.join("drive-scsi0.img")).unwrap(), f.img1);
    m.unmount();
}

#[test]
fn new_and_forgotten_snapshots_show_on_the_next_listing() {
    let tmp = TempDir::new("mount-live");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let ls = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(m.path(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ls("ct/200"),
        ["2024-05-02T08:11:33Z", "latest", "notes", "owner"]
    );
    let mut spec = SnapSpec::vm("200", T2);
    spec.ty = pbsfs::store::format::names::BackupType::Ct;
    spec.images = vec![("disk.img", vec![7u8; 1000], 4096)];
    let d = make_snapshot(&f.ds, &spec);
    assert!(ls("ct/200").contains(&"2024-05-03T08:11:33Z".to_string()));
    // `latest` follows within its 1 s entry TTL; its target is cached per inode
    // (FUSE_CACHE_SYMLINKS), so a new target must be a new inode.
    let latest = || fs::read_link(m.path("ct/200/latest")).unwrap();
    assert!(poll(5, || latest().to_str() == Some("2024-05-03T08:11:33Z")));
    let img = m.path("ct/200/2024-05-03T08:11:33Z/disk.img");
    assert_eq!(fs::read(&img).unwrap(), vec![7u8; 1000]);
    let ino = fs::metadata(&img).unwrap().ino();
    f.ds.destroy_snapshot(&d).unwrap();
    assert!(!ls("ct/200").contains(&"2024-05-03T08:11:33Z".to_string()));
    assert!(poll(5, || latest().to_str() == Some("2024-05-02T08:11:33Z")));
    // The same time made again with other content: a new file, never the old pages.
    spec.images = vec![("disk.img", vec![9u8; 1000], 4096)];
    make_snapshot(&f.ds, &spec);
    assert!(poll(5, || fs::read(&img)
        .map(|d| d == vec![9u8; 1000])
        .unwrap_or(false)));
    assert_ne!(fs::metadata(&img).unwrap().ino(), ino);
    m.unmount();
}

#[test]
fn sigterm_unmounts_cleanly_and_after_kill_9_umount_clears_the_mountpoint() {
    let tmp = TempDir::new("mount-sig");
    let f = fixture(&tmp);
    let mut m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let pid = m.child.as_ref().unwrap().id();
    ok(&Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .output()
        .unwrap());
    let mut child = m.child.take().unwrap();
    assert!(
        poll(30, || child.try_wait().unwrap().is_some()),
        "still running after SIGTERM; log:\n{}",
        m.log_text()
    );
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}; log:\n{}", m.log_text());
    assert!(!is_mounted(&m.mp), "{}", m.log_text());
    drop(m);

    let mut m = Mounted::start(&f.store, &tmp.join("mnt2"), &[]);
    // A save in flight is either whole or absent; then the server dies.
    fs::write(m.path("vm/100/2024-05-02T08:11:33Z/notes"), "before kill\n").unwrap();
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(is_mounted(&m.mp));
    assert!(
        fs::read(m.path("vm/100/2024-05-02T08:11:33Z/notes")).is_err(),
        "a dead mount answers nothing"
    );
    ok(&pbsfs(&["umount", m.mp.to_str().unwrap()]));
    assert!(!is_mounted(&m.mp));
    // The store verifies clean.
    assert_eq!(notes_of(&f, &f.d1), "before kill\n");
    ok(&pbsfs(&["verify", f.store.to_str().unwrap()]));
}

/// `ls -liR` as (path, inode) pairs.
fn inode_listing(root: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let md = fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path().display().to_string(), md.ino()));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn inode_numbers_survive_the_kernel_forgetting_them_and_the_table_shrinks() {
    let tmp = TempDir::new("mount-forget");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let before = inode_listing(&m.mp);
    assert!(before.len() > 15, "{before:?}");
    // Make the kernel drop its dentries and inodes: it sends FORGET for each.
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    let forgotten = poll(30, || m.log_text().contains("forgotten"));
    assert!(
        forgotten,
        "no FORGET reached the table; log:\n{}",
        m.log_text()
    );
    assert_eq!(
        inode_listing(&m.mp),
        before,
        "same numbers after the kernel forgot them"
    );
    let live: Vec<usize> = m
        .log_text()
        .lines()
        .filter_map(|l| {
            l.split(" forgotten, ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        live.iter().min().copied().unwrap_or(usize::MAX) < before.len() / 2,
        "the table shrank: {live:?}"
    );
    m.unmount();
}

#[test]
fn tar_cp_and_rsync_copy_a_snapshot_byte_exact() {
    let tmp = TempDir::new("mount-copy");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let snap = m.path("vm/100/2024-05-02T08:11:33Z");
    let out = tmp.join("out");
    fs::create_dir(&out).unwrap();
    for (tool, cmd, dest) in [
        (
            "tar",
            format!(
                "tar -C {} -cf - . | tar -C {}/tar -xf -",
                snap.display(),
                out.display()
            ),
            "tar",
        ),
        (
            "cp",
            format!("cp -a {} {}/cp", snap.display(), out.display()),
            "cp",
        ),
        (
            "rsync",
            format!("rsync -a {}/ {}/rsync/", snap.display(), out.display()),
            "rsync",
        ),
    ] {
        if tool == "tar" {
            fs::create_dir(out.join("tar")).unwrap();
        }
        let r = sh(&cmd);
        assert!(r.status.success(), "{tool}: {}", describe(&r));
        let d = out.join(dest);
        assert_eq!(
            fs::read(d.join("drive-scsi0.img")).unwrap(),
            f.img1,
            "{tool}"
        );
        assert_eq!(
            fs::read(d.join("qemu-server.conf")).unwrap(),
            f.conf,
            "{tool}"
        );
        assert_eq!(
            fs::read(d.join("notes")).unwrap(),
            fs::read(snap.join("notes")).unwrap(),
            "{tool}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(d.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(json["backup-id"], "100", "{tool}");
    }
    // Copying never writes to the store.
    assert_eq!(m.commits(), 0, "log:\n{}", m.log_text());
    m.unmount();
}

/// How many file systems are mounted exactly on `mp`.
fn mounts_on(mp: &std::path::Path) -> usize {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == mp.to_str())
        .count()
}

/// Run `pbsfs ARGS` (a mount that must be refused): exit 2, and nothing more mounted
/// on `mp`. A regression that mounted is taken away again before the test fails.
fn refused_mount(mp: &std::path::Path, args: &[&str]) -> String {
    let before = mounts_on(mp);
    let out = pbsfs(args);
    if mounts_on(mp) > before {
        force_unmount(mp);
    }
    let err = fails_with(&out, 2);
    assert_eq!(mounts_on(mp), before, "nothing mounted: {err}");
    err
}

/// `pbsfs mount ... --foreground` that must be refused by the serving process itself;
/// waited for by polling, killed (and its mount removed) if it serves instead.
fn refused_foreground_mount(store: &std::path::Path, mp: &std::path::Path) -> String {
    let before = mounts_on(mp);
    let mut child = Command::new(crate::common::BIN)
        .arg("mount")
        .arg(store)
        .arg(mp)
        .arg("--foreground")
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = poll(30, || child.try_wait().unwrap().is_some());
    if !ended || mounts_on(mp) > before {
        force_unmount(mp);
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let err = fails_with(&out, 2);
    assert_eq!(mounts_on(mp), before, "nothing mounted: {err}");
    err
}

#[test]
fn a_second_mount_on_a_served_mountpoint_is_refused_and_the_first_keeps_serving() {
    let tmp = TempDir::new("mount-stack");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let other = tmp.join("other");
    pbsfs::Datastore::create(&other, false).unwrap();
    // The same folder by another name: the check is on the canonical path.
    let link = tmp.join("link");
    std::os::unix::fs::symlink(&m.mp, &link).unwrap();
    let mp_path = m.mp.clone();
    let mp = mp_path.to_str().unwrap();
    for (store, target) in [
        (&f.store, &m.mp),
        (&other, &m.mp),
        (&f.store, &link),
        (&other, &link),
    ] {
        for ro in [false, true] {
            let mut args = vec!["mount", store.to_str().unwrap(), target.to_str().unwrap()];
            if ro {
                args.extend(["-o", "ro"]);
            }
            let err = refused_mount(&m.mp, &args);
            assert!(
                err.contains(&format!("mountpoint {mp}"))
                    && err.contains("already the mountpoint of a FUSE file system")
                    && err.contains(&format!("pbsfs:{}", f.store.display())),
                "names the mountpoint and what is mounted there: {args:?}: {err}"
            );
        }
    }
    let err = refused_foreground_mount(&other, &m.mp);
    assert!(err.contains("already the mountpoint"), "{err}");
    // The first mount was never hidden and still serves.
    assert_eq!(mounts_on(&m.mp), 1);
    assert_eq!(
        fs::read(m.path("vm/100/2024-05-02T08:11:33Z/qemu-server.conf")).unwrap(),
        f.conf
    );
    m.unmount();
    assert_eq!(mounts_on(&tmp.join("mnt")), 0);
    // A mount whose server was killed is still a mountpoint (ENOTCONN): refused too,
    // with a message that says what to do, not a bare "not connected".
    let mut m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let args = ["mount", other.to_str().unwrap(), mp];
    let err = refused_mount(&m.mp, &args);
    assert!(
        err.contains(&format!("mountpoint {mp}")) && err.contains("server has ended"),
        "{err}"
    );
    assert_eq!(mounts_on(&m.mp), 1, "the dead mount is left to umount");
    crate::common::ok(&pbsfs(&["umount", mp]));
    assert_eq!(mounts_on(&m.mp), 0);
}

#[test]
fn a_non_empty_mountpoint_is_refused_unless_nonempty_which_hides_its_content() {
    let tmp = TempDir::new("mount-nonempty");
    let f = fixture(&tmp);
    let mp = tmp.join("mnt");
    fs::create_dir(&mp).unwrap();
    fs::write(mp.join("below.txt"), b"below\n").unwrap();
    let args = ["mount", f.store.to_str().unwrap(), mp.to_str().unwrap()];
    let err = refused_mount(&mp, &args);
    assert!(
        err.contains(&format!("mountpoint {}", mp.display()))
            && err.contains("not empty")
            && err.contains("-o nonempty"),
        "{err}"
    );
    let err = refused_foreground_mount(&f.store, &mp);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(fs::read(mp.join("below.txt")).unwrap(), b"below\n");
    // Accepted with -o nonempty; the file is hidden while mounted. FUSE 3 has no such
    // option: the kernel would refuse the mount if pbsfs passed it on.
    let m = Mounted::start(&f.store, &mp, &["-o", "nonempty,ro"]);
    assert!(!m.path("below.txt").exists(), "hidden while mounted");
    assert_eq!(
        fs::read(m.path("vm/100/2024-05-02T08:11:33Z/qemu-server.conf")).unwrap(),
        f.conf
    );
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == mp.to_str())
        .unwrap();
    // The mount options (field 6) and the super options (the last field).
    let fields: Vec<&str> = line.split(' ').collect();
    for opts in [fields[5], fields[fields.len() - 1]] {
        assert!(!opts.split(',').any(|o| o == "nonempty"), "{line}");
    }
    m.unmount();
    assert_eq!(fs::read(mp.join("below.txt")).unwrap(), b"below\n");
    // The background mount hands -o nonempty to its serving process too.
    let out = pbsfs(&[
        "mount",
        f.store.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        "nonempty",
    ]);
    let mounted = is_mounted(&mp);
    let served = fs::metadata(mp.join("vm/100")).is_ok_and(|m| m.is_dir());
    let umount = pbsfs(&["umount", mp.to_str().unwrap()]);
    force_unmount(&mp);
    ok(&out);
    assert!(mounted && served, "{}", describe(&out));
    ok(&umount);
    assert!(
        poll(10, || fs::read(mp.join("below.txt"))
            .is_ok_and(|b| b == b"below\n")),
        "visible again after unmount"
    );
}

#[test]
fn allow_other_comes_with_permission_checks_so_other_users_cannot_write() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("mount-allow-other");
    // Another user must be able to reach the mountpoint whatever the umask.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let f = fixture(&tmp);
    let manifest = f.ds.snapshot_path(&f.d1).join("index.json.blob");
    let manifest_before = fs::read(&manifest).unwrap();
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &["-o", "allow_other"]);
    assert!(
        m.log_text().contains("added default_permissions"),
        "said so: {}",
        m.log_text()
    );
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == m.mp.to_str())
        .unwrap();
    assert!(
        line.contains("default_permissions") && line.contains("allow_other"),
        "{line}"
    );
    let nobody = |cmd: String| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg(&cmd)
            .output()
            .unwrap()
    };
    let snap = m.path("vm/100/2024-05-02T08:11:33Z");
    // allow_other works: another user reads...
    let out = nobody(format!("cat {}", snap.join("notes").display()));
    assert_eq!(ok(&out), "first\n");
    // ...but writes nothing: not notes, not verify_state, not group notes, no new file.
    for cmd in [
        format!("echo forged > {}", snap.join("notes").display()),
        format!("echo ok > {}", snap.join("verify_state").display()),
        format!("echo forged > {}", m.path("vm/100/notes").display()),
        format!("touch {}", snap.join("scratch").display()),
        format!("truncate -s 0 {}", snap.join("notes").display()),
    ] {
        let out = nobody(cmd.clone());
        let err = fails(&out);
        assert!(
            err.contains("Permission denied"),
            "{cmd}: {}",
            describe(&out)
        );
    }
    assert_eq!(
        fs::read(&manifest).unwrap(),
        manifest_before,
        "manifest unchanged"
    );
    assert!(
        !f.store.join("vm/100/notes").exists(),
        "no group notes written"
    );
    assert_eq!(notes_of(&f, &f.d1), "first\n");
    assert_eq!(m.commits(), 0, "log:\n{}", m.log_text());
    // Root still reads (and owns the files).
    assert_eq!(fs::read(snap.join("notes")).unwrap(), b"first\n");
    m.unmount();
}
