//! Content planted in a store by whoever has the `backup` user's rights: symlinks
//! pointing outside, FIFOs where files are expected, giant sparse files. None is ever
//! followed, blocks, or fills memory, through the CLI or the mount; nothing outside the
//! store changes.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::mount_util::Mounted;

const T: &str = "2024-05-02T08:11:33Z";
const SNAP: &str = "vm/100/2024-05-02T08:11:33Z";

/// A store with vm/100 (image + config, group notes) and a namespace `ok`; and, outside
/// it, a copy of the group folder, of a namespace and a secret file.
struct Planted {
    _tmp: TempDir,
    store: PathBuf,
    outside: PathBuf,
    data: Vec<u8>,
}

const SECRET: &[u8] = b"TOP-SECRET-BYTES\n";

fn planted() -> Planted {
    let tmp = TempDir::new("hostile");
    let store = sparse_store(&tmp);
    let data = pseudo_random(20 * 1024, 9);
    ok(&backup_image(&store, &tmp, "vm/100", &data, T));
    ok(&pbsfs(&[
        "notes",
        s(&store),
        "vm/100",
        "--set",
        "group notes\n",
    ]));
    std::fs::create_dir_all(store.join("ns/ok")).unwrap();
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), SECRET).unwrap();
    // Valid datastore content, but outside: a group and a namespace holding one.
    copy_tree(&store.join("vm/100"), &outside.join("group"));
    copy_tree(&store.join("vm"), &outside.join("ns/vm"));
    Planted {
        _tmp: tmp,
        store,
        outside,
        data,
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

/// Every file below `root` and its content: "nothing outside changed".
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                todo.push(p);
            } else if md.is_file() {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn chunk_path(store: &Path, index: usize) -> PathBuf {
    let ds = pbsfs::Datastore::open(store, None).unwrap();
    let idx = ds
        .read_index(&store.join(SNAP).join("drive-scsi0.img.fidx"))
        .unwrap();
    ds.chunk_store()
        .chunk_path(&idx.chunk_info(index).unwrap().digest)
}

/// Replace `p` by a symlink to `target`.
fn plant_symlink(p: &Path, target: &Path) {
    if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(p).unwrap();
    } else {
        let _ = std::fs::remove_file(p);
    }
    symlink(target, p).unwrap();
}

fn no_secret(what: &str, out: &std::process::Output) {
    let all = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(
        !all.windows(SECRET.len() - 1)
            .any(|w| w == &SECRET[..SECRET.len() - 1]),
        "{what}: the outside bytes appeared: {}",
        describe(out)
    );
}

#[test]
fn symlinks_planted_anywhere_in_the_store_are_never_followed() {
    let p = planted();
    let st = s(&p.store).to_string();
    let secret = p.outside.join("secret");
    // What lies outside at first; the test adds its own copies later.
    let before = contents(&p.outside);
    // A chunk and the index: their targets are valid copies, and still never read.
    let chunk = chunk_path(&p.store, 1);
    std::fs::copy(&chunk, p.outside.join("chunk")).unwrap();
    plant_symlink(&chunk, &p.outside.join("chunk"));
    let out = pbsfs(&["cat", &st, SNAP, "drive-scsi0.img"]);
    let err = fails_with(&out, 2);
    assert!(err.contains("symbolic link"), "{err}");
    let out = pbsfs(&["verify", &st, SNAP]);
    exits(&out, 1);
    // Verify renamed the planted link itself to .bad, never what it names.
    assert!(std::fs::symlink_metadata(&chunk).is_err());
    std::fs::copy(p.outside.join("chunk"), &chunk).unwrap();

    let fidx = p.store.join(SNAP).join("drive-scsi0.img.fidx");
    std::fs::copy(&fidx, p.outside.join("fidx")).unwrap();
    plant_symlink(&fidx, &p.outside.join("fidx"));
    let out = pbsfs(&["cat", &st, SNAP, "drive-scsi0.img"]);
    assert!(
        fails_with(&out, 2).contains("symbolic link"),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(&fidx).unwrap();
    std::fs::copy(p.outside.join("fidx"), &fidx).unwrap();

    // The manifest: a link to a valid copy outside hides the snapshot; an edit through
    // it never rewrites the copy.
    let manifest = p.store.join(SNAP).join("index.json.blob");
    std::fs::copy(&manifest, p.outside.join("manifest")).unwrap();
    plant_symlink(&manifest, &p.outside.join("manifest"));
    let listed = ok(&pbsfs(&["snapshots", &st]));
    assert!(!listed.contains(T), "{listed}");
    fails_with(&pbsfs(&["notes", &st, SNAP, "--set", "pwned"]), 2);
    fails_with(&pbsfs(&["cat", &st, SNAP, "drive-scsi0.img"]), 2);
    std::fs::remove_file(&manifest).unwrap();
    std::fs::copy(p.outside.join("manifest"), &manifest).unwrap();

    // Group notes and owner pointing at a secret: never printed, never rewritten.
    let notes = p.store.join("vm/100/notes");
    plant_symlink(&notes, &secret);
    let out = pbsfs(&["notes", &st, "vm/100"]);
    no_secret("group notes", &out);
    fails_with(&out, 2);
    no_secret(
        "groups",
        &pbsfs(&["groups", &st, "--output-format", "json"]),
    );
    let owner = p.store.join("vm/100/owner");
    std::fs::copy(&owner, p.outside.join("owner")).unwrap();
    plant_symlink(&owner, &secret);
    no_secret(
        "groups",
        &pbsfs(&["groups", &st, "--output-format", "json"]),
    );
    // Setting group notes replaces the planted link, never the file it names.
    ok(&pbsfs(&["notes", &st, "vm/100", "--set", "new\n"]));
    assert_eq!(std::fs::read(&secret).unwrap(), SECRET);
    assert!(std::fs::symlink_metadata(&notes).unwrap().is_file());

    // A group folder and a namespace folder that are symlinks to valid copies outside.
    symlink(p.outside.join("group"), p.store.join("vm/evil")).unwrap();
    symlink(p.outside.join("ns"), p.store.join("ns/evil")).unwrap();
    let listed = ok(&pbsfs(&["snapshots", &st]));
    assert!(!listed.contains("evil"), "{listed}");
    let listed = ok(&pbsfs(&["groups", &st]));
    assert!(!listed.contains("evil"), "{listed}");
    for (ns, snap) in [
        (None, format!("vm/evil/{T}")),
        (Some("evil"), SNAP.to_string()),
    ] {
        let mut args = vec!["notes", &st, &snap, "--set", "pwned"];
        let mut cat = vec!["cat", &st, &snap, "drive-scsi0.img"];
        let mut verify = vec!["verify", &st, &snap];
        if let Some(n) = ns {
            for a in [&mut args, &mut cat, &mut verify] {
                a.extend(["--ns", n]);
            }
        }
        fails_with(&pbsfs(&args), 2);
        fails_with(&pbsfs(&cat), 2);
        assert_ne!(pbsfs(&verify).status.code(), Some(0), "{snap}");
    }
    // A backup into a symlinked group or namespace never writes through it.
    let src = p.outside.join("src");
    std::fs::write(&src, b"0123456789").unwrap();
    let arg = format!("x.img:{}", s(&src));
    fails_with(&pbsfs(&["backup", &st, "vm/evil", &arg]), 2);
    fails_with(&pbsfs(&["backup", &st, "vm/1", &arg, "--ns", "evil"]), 2);

    // The mount: none of it shows; what shows gives no outside byte.
    let mp = p.outside.with_file_name("mnt");
    let m = Mounted::start(&p.store, &mp, &[]);
    let vm: Vec<String> = std::fs::read_dir(m.path("vm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(vm, ["100"]);
    assert!(std::fs::metadata(m.path("vm/evil")).is_err());
    assert!(std::fs::metadata(m.path("ns/evil")).is_err());
    // A planted owner link is not reachable by name, like a planted folder.
    let e = std::fs::read(m.path("vm/100/owner")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    assert_eq!(
        std::fs::read(m.path(&format!("{SNAP}/drive-scsi0.img"))).unwrap(),
        p.data
    );
    let e = std::fs::write(m.path(&format!("vm/evil/{T}/notes")), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    m.unmount();
    std::fs::remove_file(&owner).unwrap();
    std::fs::copy(p.outside.join("owner"), &owner).unwrap();
    let after = contents(&p.outside);
    for (f, bytes) in &before {
        assert!(after.get(f) == Some(bytes), "{} changed", f.display());
    }
}

/// Run `cmd` with a deadline: a hang is a failure, not a stuck test.
fn within(secs: u32, cmd: &[&str]) -> std::process::Output {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .args(cmd)
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "{cmd:?} hung: {}",
        describe(&out)
    );
    out
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    let out = Command::new("mkfifo").arg(p).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn a_fifo_where_a_file_is_expected_is_an_error_never_a_hang() {
    let p = planted();
    let st = s(&p.store).to_string();
    let snap_dir = p.store.join(SNAP);
    let chunk = chunk_path(&p.store, 0);
    let keep: Vec<(PathBuf, Vec<u8>)> = [
        chunk.clone(),
        snap_dir.join("drive-scsi0.img.fidx"),
        p.store.join("vm/100/notes"),
        p.store.join("vm/100/owner"),
    ]
    .into_iter()
    .map(|f| {
        let b = std::fs::read(&f).unwrap();
        (f, b)
    })
    .collect();
    for (f, _) in &keep {
        mkfifo(f);
    }
    let bin = BIN.to_string();
    fails_with(&within(10, &[&bin, "cat", &st, SNAP, "drive-scsi0.img"]), 2);
    fails_with(&within(10, &[&bin, "notes", &st, "vm/100"]), 2);
    ok(&within(10, &[&bin, "groups", &st]));
    exits(&within(30, &[&bin, "verify", &st]), 1);

    let mp = p.outside.with_file_name("mnt");
    let m = Mounted::start(&p.store, &mp, &[]);
    for f in [
        format!("{SNAP}/drive-scsi0.img"),
        "vm/100/notes".to_string(),
        "vm/100/owner".to_string(),
    ] {
        let path = m.path(&f);
        let out = within(10, &["cat", s(&path)]);
        assert!(!out.status.success(), "{f}: {}", describe(&out));
    }
    // A FIFO as a group or namespace folder is no folder: not listed, not reachable.
    mkfifo(&p.store.join("vm/fifo"));
    mkfifo(&p.store.join("ns/fifo"));
    let listed = ok(&within(10, &[&bin, "groups", &st]));
    assert!(!listed.contains("fifo"), "{listed}");
    fails_with(&within(10, &[&bin, "snapshots", &st, "--ns", "fifo"]), 2);
    let out = within(10, &["ls", s(&m.path("vm")), s(&m.path("ns"))]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("fifo"),
        "{}",
        describe(&out)
    );
    // The manifest as a FIFO: the snapshot is not finished, the mount goes on.
    let manifest = snap_dir.join("index.json.blob");
    let saved = std::fs::read(&manifest).unwrap();
    mkfifo(&manifest);
    let out = within(10, &["ls", "-l", s(&m.path("vm/100"))]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(T));
    std::fs::remove_file(&manifest).unwrap();
    std::fs::write(&manifest, &saved).unwrap();
    // Healed, everything serves again from the same mount.
    for (f, b) in &keep {
        std::fs::remove_file(f).unwrap();
        std::fs::write(f, b).unwrap();
    }
    assert_eq!(
        std::fs::read(m.path(&format!("{SNAP}/drive-scsi0.img"))).unwrap(),
        p.data
    );
    m.unmount();
}

#[test]
fn giant_sparse_manifests_and_indexes_are_refused_without_reading_them() {
    let p = planted();
    let st = s(&p.store).to_string();
    let snap_dir = p.store.join(SNAP);
    let sparse = |f: &Path| {
        let _ = std::fs::remove_file(f);
        let out = Command::new("truncate")
            .args(["-s", "4G"])
            .arg(f)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    };
    let fidx = snap_dir.join("drive-scsi0.img.fidx");
    let saved = std::fs::read(&fidx).unwrap();
    sparse(&fidx);
    let (kib, out) = crate::bad_input::peak_rss_kib(&["cat", &st, SNAP, "drive-scsi0.img"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(kib < 64 * 1024, "cat of a 4 GiB index peaked at {kib} KiB");
    // A dynamic index with a valid header and gigabytes of zeros is refused unread
    // beyond 1 GiB, and below that at its first entry.
    let didx = snap_dir.join("stream.didx");
    let mut header = vec![0u8; 4096];
    header[..8].copy_from_slice(&[28, 145, 78, 165, 25, 186, 179, 205]);
    let ds = pbsfs::Datastore::open(&p.store, None).unwrap();
    for (size, why) in [
        ("4G", "larger than any index"),
        ("400004096", "does not increase"),
    ] {
        std::fs::write(&didx, &header).unwrap();
        let out = Command::new("truncate")
            .args(["-s", size, s(&didx)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        let e = ds.read_index(&didx).unwrap_err();
        assert!(e.to_string().contains(why), "{size}: {e}");
    }
    std::fs::remove_file(&didx).unwrap();

    let manifest = snap_dir.join("index.json.blob");
    sparse(&manifest);
    let (kib, out) = crate::bad_input::peak_rss_kib(&["cat", &st, SNAP, "drive-scsi0.img"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        kib < 64 * 1024,
        "cat of a 4 GiB manifest peaked at {kib} KiB"
    );
    let (kib, out) = crate::bad_input::peak_rss_kib(&["verify", &st]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(kib < 64 * 1024, "verify peaked at {kib} KiB");

    // The mount: listing and reading fail, memory stays small.
    let mp = p.outside.with_file_name("mnt");
    let m = Mounted::start(&p.store, &mp, &[]);
    let _ = std::fs::read_dir(m.path("vm/100")).map(|d| d.count());
    let _ = std::fs::read(m.path(&format!("{SNAP}/notes")));
    let pid = m.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(hwm < 64 * 1024, "the mount peaked at {hwm} KiB");
    m.unmount();
    std::fs::write(&fidx, &saved).unwrap();
}
