//! Stores that may not be written or read as usual: a read-only medium (a read-only
//! bind mount), each PBS maintenance mode, an S3-backed store; and verify telling the
//! truth about them (what it checked, what it could record, its exit code), healing
//! corrupt chunks by renaming them, and failing crypt-mode mismatches.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::*;
use crate::mount_util::{is_mounted, poll, Mounted};

const SNAP: &str = "vm/100/2024-05-02T08:11:33Z";

/// A store with one snapshot of vm/100: a 40 KiB image in 4 KiB chunks and a config.
fn store_with_snapshot(tmp: &TempDir) -> (PathBuf, Vec<u8>) {
    let store = sparse_store(tmp);
    let data = pseudo_random(40 * 1024, 7);
    ok(&backup_image(
        &store,
        tmp,
        "vm/100",
        &data,
        "2024-05-02T08:11:33Z",
    ));
    (store, data)
}

/// Every file and folder below `root` with its mode and content hash: "unchanged byte
/// for byte" compares two of these.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, u64, Option<pbsfs::Digest>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let hash = md
                .is_file()
                .then(|| pbsfs::Digest::of(&std::fs::read(&p).unwrap()));
            if md.is_dir() {
                todo.push(p.clone());
            }
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                (md.mode(), md.len(), hash),
            );
        }
    }
    out
}

/// A PBS configuration in `tmp/pbs` naming `store` as datastore `s1` with `extra`
/// section lines; returns (config dir, run dir).
fn pbs_config(tmp: &TempDir, store: &Path, extra: &str) -> (PathBuf, PathBuf) {
    let cfg = tmp.join("pbs-etc");
    let run = tmp.join("pbs-run");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        cfg.join("datastore.cfg"),
        format!("datastore: s1\n\tpath {}\n{extra}", s(store)),
    )
    .unwrap();
    (cfg, run)
}

fn pbsfs_with(cfg: &(PathBuf, PathBuf), args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PBSFS_PBS_CONFIG_DIR", &cfg.0)
        .env("PBSFS_PBS_RUN_DIR", &cfg.1)
        .output()
        .unwrap()
}

/// A read-only bind mount of `src` at `at`, undone on drop.
struct RoBind(PathBuf);

impl RoBind {
    fn new(src: &Path, at: &Path) -> RoBind {
        std::fs::create_dir_all(at).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).output().unwrap();
            assert!(out.status.success(), "mount {args:?}: {}", describe(&out));
        };
        run(&["--bind", s(src), s(at)]);
        let guard = RoBind(at.to_path_buf());
        run(&["-o", "remount,bind,ro", s(at)]);
        guard
    }
}

impl Drop for RoBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_read_only_store_serves_every_read_and_verify_tells_the_truth() {
    let tmp = TempDir::new("ro-store");
    let (store, data) = store_with_snapshot(&tmp);
    let ro = tmp.join("ro");
    let _bind = RoBind::new(&store, &ro);
    let untouched = tree(&ro);

    let out = pbsfs(&["cat", s(&ro), SNAP, "drive-scsi0.img"]);
    assert_eq!(ok_bytes(out), data);
    assert!(ok(&pbsfs(&["snapshots", s(&ro)])).contains(SNAP));
    let out = pbsfs(&["verify", s(&ro)]);
    let stdout = exits(&out, 0);
    assert!(stdout.contains(&format!("{SNAP}: ok")), "{stdout}");
    let err = stderr(&out);
    assert_eq!(err.matches("not recorded").count(), 1, "said once: {err}");
    assert!(err.contains("read-only"), "{err}");
    let err = fails_with(&pbsfs(&["notes", s(&ro), SNAP, "--set", "x"]), 2);
    assert!(err.contains("read-only"), "{err}");
    assert_eq!(tree(&ro), untouched, "reads changed a read-only store");

    // Damage seen through the read-only path is damage (exit 1); nothing is renamed.
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let idx = ds
        .read_index(&store.join("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img.fidx"))
        .unwrap();
    let digest = idx.chunk_info(3).unwrap().digest;
    let chunk = ds.chunk_store().chunk_path(&digest);
    let mut raw = std::fs::read(&chunk).unwrap();
    raw[20] ^= 1;
    std::fs::write(&chunk, &raw).unwrap();
    let before = tree(&ro);
    let out = pbsfs(&["verify", s(&ro)]);
    let stdout = exits(&out, 1);
    assert!(stdout.contains(&digest.to_hex()), "{stdout}");
    assert!(chunk.exists(), "a read-only store is never renamed in");
    assert_eq!(tree(&ro), before, "verify changed a read-only store");

    // The mount of a read-only store is read-only by itself.
    let mp = tmp.join("mnt");
    let m = Mounted::start(&ro, &mp, &[]);
    let img = std::fs::read(m.path(&format!("{SNAP}/drive-scsi0.img")));
    assert_eq!(
        img.unwrap_err().raw_os_error(),
        Some(libc::EIO),
        "the damaged chunk gives EIO"
    );
    let notes = m.path(&format!("{SNAP}/notes"));
    let e = std::fs::write(&notes, b"new\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let md = std::fs::metadata(&notes).unwrap();
    assert_eq!(md.mode() & 0o222, 0, "no write bits on a read-only mount");
    m.unmount();
    assert_eq!(tree(&ro), before);
}

fn snapshot_of(store: &Path) -> PathBuf {
    store.join("vm/100/2024-05-02T08:11:33Z")
}

#[test]
fn maintenance_modes_refuse_what_pbs_refuses_and_change_nothing() {
    let tmp = TempDir::new("maintenance");
    let (store, data) = store_with_snapshot(&tmp);
    let mp = tmp.join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    for mode in ["read-only", "offline", "unmount", "s3-refresh", "delete"] {
        let cfg = pbs_config(
            &tmp,
            &store,
            &format!("\tmaintenance-mode type={mode},message=\"disk swap\"\n"),
        );
        let before = tree(&store);
        let writes: [&[&str]; 5] = [
            &["notes", s(&store), SNAP, "--set", "x"],
            &["protected", s(&store), SNAP, "on"],
            &["forget", s(&store), SNAP],
            &["gc", s(&store), "--force"],
            &["prune", s(&store), "vm/100", "--keep-last", "1"],
        ];
        for args in writes {
            let err = fails_with(&pbsfs_with(&cfg, args), 2);
            assert!(
                err.contains(&format!("maintenance mode '{mode}'")) && err.contains("disk swap"),
                "{mode} {args:?}: {err}"
            );
        }
        let src = tmp.join("src");
        std::fs::write(&src, b"more").unwrap();
        let arg = format!("x.img:{}", s(&src));
        fails_with(&pbsfs_with(&cfg, &["backup", s(&store), "vm/101", &arg]), 2);
        let cat = pbsfs_with(&cfg, &["cat", s(&store), SNAP, "drive-scsi0.img"]);
        let verify = pbsfs_with(&cfg, &["verify", s(&store)]);
        let mount = pbsfs_with(&cfg, &["mount", s(&store), s(&mp)]);
        if mode == "read-only" {
            assert_eq!(ok_bytes(cat), data);
            assert!(ok(&pbsfs_with(&cfg, &["snapshots", s(&store)])).contains(SNAP));
            let out = exits(&verify, 0);
            assert!(out.contains(": ok"), "{out}");
            assert!(
                stderr(&verify).contains("not recorded"),
                "{}",
                describe(&verify)
            );
            ok(&mount);
            assert!(is_mounted(&mp));
            assert_eq!(
                std::fs::read(mp.join(format!("{SNAP}/drive-scsi0.img"))).unwrap(),
                data
            );
            let e = std::fs::write(mp.join(format!("{SNAP}/notes")), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS));
            ok(&pbsfs(&["umount", s(&mp)]));
            assert!(poll(10, || !is_mounted(&mp)));
        } else {
            for (what, out) in [("cat", &cat), ("verify", &verify), ("mount", &mount)] {
                let err = fails_with(out, 2);
                assert!(err.contains(&format!("'{mode}'")), "{mode} {what}: {err}");
            }
            assert!(!is_mounted(&mp), "{mode}: mounted");
            fails_with(&pbsfs_with(&cfg, &["snapshots", s(&store)]), 2);
        }
        assert_eq!(tree(&store), before, "{mode}: the store changed");
    }
}

#[test]
fn an_s3_backed_store_is_never_written_and_its_marker_chunks_are_never_read() {
    let tmp = TempDir::new("s3");
    let (store, _) = store_with_snapshot(&tmp);
    // As PBS's local cache of an S3 store: zero-length markers where chunks would be.
    for f in chunk_files(&store) {
        std::fs::write(&f, b"").unwrap();
    }
    let cfg = pbs_config(&tmp, &store, "\tbackend type=s3,client=c1,bucket=b1\n");
    let before = tree(&store);
    let err = fails_with(
        &pbsfs_with(&cfg, &["cat", s(&store), SNAP, "drive-scsi0.img"]),
        2,
    );
    assert!(err.contains("bucket") && err.contains("S3"), "{err}");
    let err = fails_with(&pbsfs_with(&cfg, &["verify", s(&store)]), 2);
    assert!(err.contains("bucket"), "{err}");
    for args in [
        &["notes", s(&store), SNAP, "--set", "x"][..],
        &["protected", s(&store), SNAP, "on"],
        &["forget", s(&store), SNAP],
        &["gc", s(&store), "--force"],
    ] {
        let err = fails_with(&pbsfs_with(&cfg, args), 2);
        assert!(err.contains("S3"), "{args:?}: {err}");
    }
    // Listing works from the local metadata; the mount is read-only and a read of an
    // image answers EOPNOTSUPP rather than the marker's (empty) bytes.
    assert!(ok(&pbsfs_with(&cfg, &["snapshots", s(&store)])).contains(SNAP));
    let mp = tmp.join("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    ok(&pbsfs_with(&cfg, &["mount", s(&store), s(&mp)]));
    let e = std::fs::read(mp.join(format!("{SNAP}/drive-scsi0.img"))).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
    let e = std::fs::write(mp.join(format!("{SNAP}/notes")), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    ok(&pbsfs(&["umount", s(&mp)]));
    assert!(poll(10, || !is_mounted(&mp)));
    assert_eq!(tree(&store), before);
}

/// The chunk of `store`'s snapshot image at `index`, and its path.
fn chunk_of(store: &Path, index: usize) -> (pbsfs::Digest, PathBuf) {
    let ds = pbsfs::Datastore::open(store, None).unwrap();
    let idx = ds
        .read_index(&snapshot_of(store).join("drive-scsi0.img.fidx"))
        .unwrap();
    let digest = idx.chunk_info(index).unwrap().digest;
    (digest, ds.chunk_store().chunk_path(&digest))
}

#[test]
fn verify_renames_a_corrupt_chunk_so_the_next_backup_heals_it() {
    let tmp = TempDir::new("heal");
    let (store, data) = store_with_snapshot(&tmp);
    let (digest, chunk) = chunk_of(&store, 2);
    let mut raw = std::fs::read(&chunk).unwrap();
    raw[15] ^= 0x80;
    std::fs::write(&chunk, &raw).unwrap();

    // --keep-bad leaves it; the default renames it, as PBS does.
    let out = exits(&pbsfs(&["verify", s(&store), "--keep-bad"]), 1);
    assert!(out.contains(&digest.to_hex()), "{out}");
    assert!(chunk.exists());
    let out = pbsfs(&["verify", s(&store)]);
    exits(&out, 1);
    assert!(!chunk.exists(), "not renamed: {}", describe(&out));
    let bad = chunk.with_file_name(format!("{}.0.bad", digest.to_hex()));
    assert_eq!(std::fs::read(&bad).unwrap(), raw);

    // The failed snapshot is no base: the next backup writes the chunk again.
    ok(&backup_image(
        &store,
        &tmp,
        "vm/100",
        &data,
        "2024-05-03T08:11:33Z",
    ));
    assert!(chunk.exists());
    let out = exits(&pbsfs(&["verify", s(&store)]), 0);
    assert!(out.contains("2 ok"), "{out}");

    // A missing chunk is reported, never "renamed".
    std::fs::remove_file(&chunk).unwrap();
    let out = pbsfs(&["verify", s(&store)]);
    exits(&out, 1);
    assert!(stderr(&out).contains("missing"), "{}", describe(&out));
    assert!(!chunk
        .with_file_name(format!("{}.1.bad", digest.to_hex()))
        .exists());
}

/// Rewrite the manifest of `store`'s snapshot with `change` (as a foreign writer would).
fn edit_manifest(store: &Path, change: impl FnOnce(&mut Value)) {
    use pbsfs::store::format::blob;
    let p = snapshot_of(store).join("index.json.blob");
    let json = blob::decode(&std::fs::read(&p).unwrap()).unwrap();
    let mut v: Value = serde_json::from_slice(&json).unwrap();
    change(&mut v);
    let text = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::write(&p, blob::encode(&text, true).unwrap()).unwrap();
}

#[test]
fn verify_fails_chunks_whose_crypt_mode_disagrees_with_their_archive() {
    let tmp = TempDir::new("cryptmode");
    let (store, _) = store_with_snapshot(&tmp);
    edit_manifest(&store, |v| {
        for f in v["files"].as_array_mut().unwrap() {
            if f["filename"] == "drive-scsi0.img.fidx" {
                f["crypt-mode"] = "encrypt".into();
            }
        }
    });
    let out = exits(&pbsfs(&["verify", s(&store)]), 1);
    assert!(out.contains("crypt-mode is encrypt"), "{out}");
    // Sound chunks of the wrong mode are not damage: nothing is renamed.
    let (_, chunk) = chunk_of(&store, 0);
    assert!(chunk.exists());
}

#[test]
fn verify_exits_2_when_it_cannot_record_and_snapshots_shows_an_invalid_state() {
    let tmp = TempDir::new("record");
    let (store, _) = store_with_snapshot(&tmp);
    // Someone holds the manifest lock past verify's 5 s deadline.
    let lock = store.join(".locks/vm-100-2024\\x2d05\\x2d02T08\\x3a11\\x3a33Z-.index.json.lck");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let ready = tmp.join("ready");
    let mut holder = std::os::unix::process::CommandExt::process_group(
        Command::new("flock")
            .arg("-x")
            .arg(&lock)
            .arg("-c")
            .arg(format!("touch {}; sleep 20", s(&ready))),
        0,
    )
    .spawn()
    .unwrap();
    assert!(poll(10, || ready.exists()));
    let out = pbsfs(&["verify", s(&store), SNAP]);
    // The whole group: the shell's sleep holds the lock too.
    ok(&Command::new("kill")
        .args(["-9", "--", &format!("-{}", holder.id())])
        .output()
        .unwrap());
    let _ = holder.wait();
    let stdout = exits(&out, 2);
    assert!(
        stdout.contains(&format!("{SNAP}: ok")),
        "the data result first: {stdout}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("could not record") && err.contains("timed out"),
        "{err}"
    );

    // A state whose UPID PBS cannot parse is shown as invalid, not as its claim.
    edit_manifest(&store, |v| {
        v["unprotected"]["verify_state"] = serde_json::json!({"state": "ok", "upid": "UPID:x"});
    });
    let text = ok(&pbsfs(&["snapshots", s(&store)]));
    let row = text.lines().find(|l| l.starts_with(SNAP)).unwrap();
    assert!(row.contains("invalid") && !row.contains(" ok "), "{row}");
    let json = snapshots_json(&store);
    assert!(json[0].get("verification").is_none(), "{json:?}");
    assert!(json[0]["verification-invalid"].is_string(), "{json:?}");
    // And --ignore-verified does not trust it.
    let out = ok(&pbsfs(&["verify", s(&store), "--ignore-verified"]));
    assert!(out.contains(&format!("{SNAP}: ok")), "{out}");
}
