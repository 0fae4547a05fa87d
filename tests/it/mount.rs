//! Real mounts: the view (`ls -lR`, sizes, times, stable inodes, df), verified reads
//! (`cmp`, EIO on a bad chunk with other ranges readable), the background mount,
//! read-only mounts, signals and `kill -9`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use crate::common::{pbsfs, TempDir, BIN};
use crate::mount_util::*;

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

#[test]
fn the_view_lists_every_group_snapshot_and_file_with_sizes_and_times() {
    let tmp = TempDir::new("mount-view");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let out = sh(&format!("ls -lR {}", m.mp.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = String::from_utf8(out.stdout).unwrap();
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
        let st = Command::new("cmp").arg(&path).arg(&src).status().unwrap();
        assert!(st.success(), "cmp {}", path.display());
    }
    assert_eq!(fs::read(snap1.join("qemu-server.conf")).unwrap(), f.conf);
    // manifest.json parses and matches the store.
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(snap2.join("manifest.json")).unwrap()).unwrap();
    let m2 = f.ds.load_manifest(&f.d2).unwrap();
    assert_eq!(&json, &serde_json::Value::Object(m2.as_map().clone()));
    // Stable inodes, and df works.
    let ino = fs::metadata(snap1.join("drive-scsi0.img")).unwrap().ino();
    let _ = sh(&format!("ls -lR {} >/dev/null", m.mp.display()));
    assert_eq!(
        fs::metadata(snap1.join("drive-scsi0.img")).unwrap().ino(),
        ino
    );
    let df = sh(&format!("df {}", m.mp.display()));
    assert!(
        df.status.success(),
        "{}",
        String::from_utf8_lossy(&df.stderr)
    );
    m.unmount();
}

#[test]
fn background_mount_returns_when_ready_and_umount_ends_it() {
    let tmp = TempDir::new("mount-bg");
    let f = fixture(&tmp);
    let mp = tmp.join("mnt");
    fs::create_dir(&mp).unwrap();
    let out = pbsfs(&["mount", f.store.to_str().unwrap(), mp.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&mp));
    // Already answering: no polling needed.
    assert!(mp.join("vm/100/latest/notes").exists());
    let out = pbsfs(&["umount", mp.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mp));
    // Errors before readiness are printed, exit 2.
    let inside = f.store.join("vm");
    let out = pbsfs(&["mount", f.store.to_str().unwrap(), inside.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not contain"));
    let out = pbsfs(&[
        "mount",
        f.store.to_str().unwrap(),
        mp.to_str().unwrap(),
        "-o",
        "bogus",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let _ = BIN;
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

fn notes_of(f: &Fixture, d: &pbsfs::datastore::snapshot::BackupDir) -> String {
    f.ds.load_manifest(d)
        .unwrap()
        .notes()
        .unwrap_or("")
        .to_string()
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
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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
        let out = sh_in(&dir, &home, "echo full > notes");
        assert!(out.status.success());
        let before = m.commits();
        let out = sh_in(&dir, &home, cmd);
        assert!(out.status.success(), "{cmd}");
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
    assert!(out.status.success());
    assert_eq!(m.commits(), before);
    // Group notes.
    let out = sh_in(&m.path("vm/100"), &home, "echo group > notes");
    assert!(out.status.success());
    assert_eq!(f.ds.group_notes(&f.d1.group).unwrap(), "group\n");
    // notes cannot be removed or renamed away.
    for cmd in ["rm notes", "mv notes other"] {
        let out = sh_in(&dir, &home, cmd);
        assert!(!out.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Scratch files are never stored.
    assert!(!f.ds.snapshot_path(&f.d1).join("scratch").exists());
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
        pbsfs::upid::Upid::parse(&s.upid).unwrap().worker_type,
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
    let upid = pbsfs::upid::Upid::new("verify_snapshot", "x", "root@pam").to_string();
    fs::write(
        &vs,
        format!("{{\"state\": \"failed\", \"upid\": \"{upid}\"}}"),
    )
    .unwrap();
    assert_eq!(state().unwrap().upid, upid);
    // Garbage: the shell sees the write error; the manifest stays byte-identical.
    let blob = f.ds.snapshot_path(&f.d1).join("index.json.blob");
    let raw = fs::read(&blob).unwrap();
    let out = sh_in(&dir, tmp.path(), "echo garbage > verify_state");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Invalid argument"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A program writing invalid JSON gets EINVAL from close().
    let out = sh_in(
        &dir,
        tmp.path(),
        "python3 -c \"f=open('verify_state','w'); f.write('{\\\"state\\\": 1}'); f.close()\"",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid argument"));
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
fn a_flipped_byte_in_one_chunk_fails_exactly_the_reads_that_touch_it() {
    let tmp = TempDir::new("mount-corrupt");
    let f = fixture(&tmp);
    // Corrupt the 6th 64 KiB chunk of drive-scsi0.img (shared by both vm/100 snapshots).
    let digest = {
        let idx = pbsfs::datastore::index::Index::open(
            &f.ds.snapshot_path(&f.d1).join("drive-scsi0.img.fidx"),
        )
        .unwrap();
        idx.chunk_info(5).unwrap().digest
    };
    let path = f.ds.chunk_store().chunk_path(&digest);
    let mut raw = fs::read(&path).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x40;
    fs::write(&path, &raw).unwrap();
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let img = m.path("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img");
    let out = sh(&format!("cat {} > /dev/null", img.display()));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Ranges before and after the bad chunk stay readable and correct.
    for (skip, count) in [(0u64, 5u64), (6, 10)] {
        let out = Command::new("dd")
            .arg(format!("if={}", img.display()))
            .args([
                "bs=64k",
                &format!("skip={skip}"),
                &format!("count={count}"),
                "status=none",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let from = (skip * 65536) as usize;
        assert_eq!(out.stdout, f.img1[from..from + (count * 65536) as usize]);
    }
    // A read spanning the bad chunk fails whole; it never comes back short.
    let out = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .args([
            "bs=256k",
            "skip=1",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let log = m.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&digest.to_hex()))
        .collect();
    assert_eq!(errors.len(), 1, "logged once:\n{log}");
    assert!(errors[0].contains("vm/100/2024-05-02T08:11:33Z"), "{log}");
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
        assert!(!out.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
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
    spec.ty = pbsfs::datastore::snapshot::BackupType::Ct;
    spec.images = vec![("disk.img", vec![7u8; 1000], 4096)];
    let d = make_snapshot(&f.ds, &spec);
    assert!(ls("ct/200").contains(&"2024-05-03T08:11:33Z".to_string()));
    assert_eq!(
        fs::read_link(m.path("ct/200/latest")).unwrap().to_str(),
        Some("2024-05-03T08:11:33Z")
    );
    let img = m.path("ct/200/2024-05-03T08:11:33Z/disk.img");
    assert_eq!(fs::read(&img).unwrap(), vec![7u8; 1000]);
    let ino = fs::metadata(&img).unwrap().ino();
    f.ds.destroy_snapshot(&d).unwrap();
    assert!(!ls("ct/200").contains(&"2024-05-03T08:11:33Z".to_string()));
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
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let mut child = m.child.take().unwrap();
    assert!(poll(30, || child.try_wait().unwrap().is_some()));
    assert!(child.wait().unwrap().success());
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
    let out = pbsfs(&["umount", m.mp.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m.mp));
    // The store verifies clean.
    assert_eq!(notes_of(&f, &f.d1), "before kill\n");
    let out = pbsfs(&["verify", f.store.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn concurrent_saves_verify_and_verify_state_edits_keep_the_manifest_valid() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = TempDir::new("mount-conc");
    let f = fixture(&tmp);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let dir = m.path("vm/100/2024-05-02T08:11:33Z");
    let writer = r#"
import sys
k, n, fails = sys.argv[1], int(sys.argv[2]), 0
for i in range(n):
    try:
        with open('notes', 'w') as f:
            f.write(f'p{k}-{i}\n')
    except OSError as e:
        fails += 1
        print(e, file=sys.stderr)
print(fails)
"#;
    let setter = r#"
import sys
fails = 0
for i in range(50):
    try:
        with open('verify_state', 'w') as f:
            f.write('ok\n' if i % 2 else 'failed\n')
    except OSError as e:
        fails += 1
        print(e, file=sys.stderr)
print(fails)
"#;
    let stop = tmp.join("STOP");
    let verifier = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "n=0; while [ ! -e {} ]; do {BIN} verify {} vm/100/2024-05-02T08:11:33Z >/dev/null || echo verify-failed; n=$((n+1)); done; echo runs=$n",
            stop.display(),
            f.store.display()
        ))
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut procs: Vec<_> = (0..4)
        .map(|k| {
            Command::new("python3")
                .args(["-c", writer, &k.to_string(), "100"])
                .current_dir(&dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    procs.push(
        Command::new("python3")
            .args(["-c", setter])
            .current_dir(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The manifest is valid at every moment.
    let done = Arc::new(AtomicBool::new(false));
    let checker = {
        let done = done.clone();
        let store = f.store.clone();
        let d = f.d1.clone();
        std::thread::spawn(move || {
            let ds = pbsfs::Datastore::open(&store, None).unwrap();
            let mut n = 0u64;
            while !done.load(Ordering::SeqCst) {
                ds.load_manifest(&d).expect("valid manifest at every step");
                n += 1;
            }
            n
        })
    };
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "failed saves: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done.store(true, Ordering::SeqCst);
    assert!(checker.join().unwrap() > 0);
    fs::write(&stop, "").unwrap();
    let out = verifier.wait_with_output().unwrap();
    let vout = String::from_utf8_lossy(&out.stdout);
    assert!(!vout.contains("verify-failed"), "{vout}");
    assert!(vout.contains("runs="), "{vout}");
    // The last committed save of some writer is what stays.
    let notes = notes_of(&f, &f.d1);
    assert!(
        (0..4).any(|k| notes == format!("p{k}-99\n")),
        "final notes {notes:?}"
    );
    assert_eq!(fs::read_to_string(dir.join("notes")).unwrap(), notes);
    // A last verify_state edit is there.
    fs::write(dir.join("verify_state"), "failed").unwrap();
    let vs =
        f.ds.load_manifest(&f.d1)
            .unwrap()
            .verify_state()
            .unwrap()
            .unwrap();
    assert!(!vs.ok);
    assert!(vs.upid.contains(":pbsfs-edit:"));
    m.unmount();
}

/// Unmounts on drop (the background mount has no child handle to reap).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn a_background_mount_logs_bad_chunks_to_syslog() {
    use std::os::unix::net::UnixDatagram;
    let tmp = TempDir::new("mount-syslog");
    let f = fixture(&tmp);
    let idx = pbsfs::datastore::index::Index::open(
        &f.ds.snapshot_path(&f.d1).join("drive-scsi0.img.fidx"),
    )
    .unwrap();
    let digest = idx.chunk_info(5).unwrap().digest;
    let chunk = f.ds.chunk_store().chunk_path(&digest);
    let mut raw = fs::read(&chunk).unwrap();
    let n = raw.len() / 2;
    raw[n] ^= 0x40;
    fs::write(&chunk, &raw).unwrap();

    let sock = tmp.join("syslog.sock");
    let server = UnixDatagram::bind(&sock).unwrap();
    server
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mp = tmp.join("mnt");
    fs::create_dir(&mp).unwrap();
    let mp = fs::canonicalize(&mp).unwrap();
    let out = Command::new(BIN)
        .args(["mount", f.store.to_str().unwrap(), mp.to_str().unwrap()])
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .env("PBSFS_SYSLOG_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _guard = Unmount(mp.clone());
    let err = fs::read(mp.join("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let found = loop {
        let Ok(n) = server.recv(&mut buf) else {
            break None;
        };
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains(&digest.to_hex()) {
            break Some(line);
        }
        seen.push(line);
    };
    let line = found.unwrap_or_else(|| panic!("no syslog line names {digest}; got {seen:?}"));
    assert!(
        line.starts_with("<27>pbsfs[") || line.starts_with("<28>pbsfs["),
        "{line}"
    );
    assert!(
        line.contains("vm/100/2024-05-02T08:11:33Z"),
        "names the snapshot: {line}"
    );
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
        assert!(
            r.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
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
