//! The on-disk format as PBS needs it: owners and modes of everything pbsfs creates,
//! PBS lock placement on a configured store, refusals on S3 and maintenance mode.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::*;

fn walk(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    out.push(p.to_path_buf());
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

#[test]
fn everything_created_gets_the_store_owner_and_pbs_modes() {
    assert_eq!(
        pbsfs::util::sys::geteuid(),
        0,
        "the suite runs as root (as CI does)"
    );
    let tmp = TempDir::new("owner");
    let store = tmp.join("store");
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(34), Some(34)).unwrap();
    pbsfs_ok(&["init", s(&store)]);
    assert_eq!(
        std::fs::read_dir(store.join(".chunks")).unwrap().count(),
        65536
    );
    let src = tmp.join("img");
    std::fs::write(&src, pseudo_random(50_000, 1)).unwrap();
    std::fs::write(tmp.join("conf"), b"memory: 512\n").unwrap();
    pbsfs_ok(&[
        "backup",
        s(&store),
        "vm/100",
        &format!("drive-scsi0.img:{}", s(&src)),
        &format!("qemu-server.conf:{}", s(&tmp.join("conf"))),
        "--chunk-size",
        "16K",
        "--notes",
        "n",
    ]);
    pbsfs_ok(&["notes", s(&store), "vm/100", "--set", "group notes"]);
    pbsfs_ok(&["protected", s(&store), "vm/100/latest", "on"]);

    let mut all = Vec::new();
    walk(&store, &mut all);
    assert!(all.len() > 65536 + 10);
    for p in &all {
        let md = std::fs::symlink_metadata(p).unwrap();
        assert_eq!(
            (md.uid(), md.gid()),
            (34, 34),
            "{} is not owned by the store's owner",
            p.display()
        );
        let mode = md.mode() & 0o7777;
        let rel = p
            .strip_prefix(&store)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let want = if p == &store {
            0o755
        } else if rel.starts_with(".chunks") {
            if md.is_dir() {
                0o750
            } else {
                0o644
            }
        } else if rel.starts_with(".locks") {
            if md.is_dir() {
                0o755
            } else {
                0o660
            }
        } else if md.is_dir() {
            0o755
        } else {
            0o644
        };
        assert_eq!(mode, want, "mode of {rel}");
    }
}

/// A PBS configuration pointing at `store`, under `tmp/etc` and `tmp/run`.
fn pbs_env(tmp: &TempDir, store: &Path, extra: &str) -> Vec<(String, String)> {
    let etc = tmp.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(
        etc.join("datastore.cfg"),
        format!("datastore: store1\n\tpath {}\n{extra}", s(store)),
    )
    .unwrap();
    vec![
        ("PBSFS_PBS_CONFIG_DIR".into(), s(&etc).into()),
        ("PBSFS_PBS_RUN_DIR".into(), s(&tmp.join("run")).into()),
    ]
}

fn run_with(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

#[test]
fn on_a_configured_pbs_store_both_lock_schemes_are_taken_in_pbs_places() {
    let tmp = TempDir::new("pbslocks");
    let store = sparse_store(&tmp);
    let out = backup_image(
        &store,
        &tmp,
        "host/my-host",
        &pseudo_random(10_000, 2),
        "2024-05-02T08:11:33Z",
    );
    ok(&out);
    // The backup ran before PBS "knew" the store: its local locks go; PBS's must be used now.
    std::fs::remove_dir_all(store.join(".locks")).unwrap();
    let env = pbs_env(&tmp, &store, "");
    let out = run_with(
        &env,
        &[
            "notes",
            s(&store),
            "host/my-host/2024-05-02T08:11:33Z",
            "--set",
            "hi",
        ],
    );
    ok(&out);
    let root = tmp.join("run/locks/store1");
    let new_snap = root.join("host-my\\x2dhost-2024\\x2d05\\x2d02T08\\x3a11\\x3a33Z");
    let new_manifest =
        root.join("host-my\\x2dhost-2024\\x2d05\\x2d02T08\\x3a11\\x3a33Z-.index.json.lck");
    let old_manifest =
        root.join("host/my-host/2024-05-02T08:11:33Z/2024-05-02T08:11:33Z.index.json.lck");
    for p in [&new_snap, &new_manifest, &old_manifest] {
        let md = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(md.mode() & 0o777, 0o660, "{}", p.display());
        let backup = pbsfs::store::pbs_config::backup_user();
        assert_eq!(
            (md.uid(), md.gid()),
            (backup.uid, backup.gid),
            "{}",
            p.display()
        );
    }
    assert!(
        !store.join(".locks").exists(),
        "a PBS store uses PBS's lock folder only"
    );
    let out = run_with(&env, &["notes", s(&store), "host/my-host/latest"]);
    assert_eq!(ok(&out), "hi");

    // While "PBS" holds the snapshot exclusively through the old scheme (a folder flock),
    // the edit must fail fast instead of racing it.
    let dir = std::fs::File::open(store.join("host/my-host/2024-05-02T08:11:33Z")).unwrap();
    dir.lock().unwrap();
    let out = run_with(
        &env,
        &["notes", s(&store), "host/my-host/latest", "--set", "x"],
    );
    let err = fails_with(&out, 2);
    assert!(err.contains("locked"), "{err}");
    drop(dir);
}

#[test]
fn s3_and_maintenance_mode_stores_refuse_writes() {
    for (extra, word) in [
        ("\tbackend type=s3,client=c,bucket=b\n", "S3"),
        (
            "\tmaintenance-mode type=read-only,message=swapping disks\n",
            "maintenance",
        ),
    ] {
        let tmp = TempDir::new("refuse");
        let store = sparse_store(&tmp);
        ok(&backup_image(
            &store,
            &tmp,
            "vm/1",
            b"abc",
            "2024-01-01T00:00:00Z",
        ));
        let before =
            std::fs::read(store.join("vm/1/2024-01-01T00:00:00Z/index.json.blob")).unwrap();
        let env = pbs_env(&tmp, &store, extra);
        let out = run_with(&env, &["notes", s(&store), "vm/1/latest", "--set", "x"]);
        let err = fails_with(&out, 2);
        assert!(err.contains(word), "{err}");
        let after = std::fs::read(store.join("vm/1/2024-01-01T00:00:00Z/index.json.blob")).unwrap();
        assert_eq!(before, after);
        let out = run_with(&env, &["cat", s(&store), "vm/1/latest", "drive-scsi0.img"]);
        if word == "S3" {
            // The chunks are in the bucket: never answered from local marker files.
            let err = fails_with(&out, 2);
            assert!(err.contains("bucket"), "{err}");
        } else {
            // Reading still works in read-only maintenance.
            assert_eq!(ok_bytes(out), b"abc");
        }
    }
}
