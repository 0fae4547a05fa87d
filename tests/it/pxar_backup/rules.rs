//! What a pxar backup leaves out and what it survives: command-line and `.pxarexclude`
//! patterns (recorded as `.pxarexclude-cli`), other file systems, a file it may not
//! read, a file growing while it is read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use pbsfs::pxar::catalog::CatalogAttr;

use super::stream::{self, Kind};
use super::{backup, cat, catalog, store_and_tree};
use crate::common::*;

fn paths(store: &Path, snap: &str) -> Vec<String> {
    catalog(&cat(store, snap, "catalog.pcat1"))
        .into_iter()
        .map(|(p, _)| {
            let rel = p.strip_prefix(b"root.pxar.didx/").unwrap_or(&p);
            String::from_utf8_lossy(rel).into_owned()
        })
        .collect()
}

fn files(root: &Path, list: &[&str]) {
    for f in list {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        if f.ends_with('/') {
            std::fs::create_dir_all(&p).unwrap();
        } else {
            std::fs::write(&p, f.as_bytes()).unwrap();
        }
    }
}

#[test]
fn excludes_follow_the_pbs_client_rules_and_are_recorded() {
    let tmp = TempDir::new("pxar-exclude");
    let (store, src) = store_and_tree(&tmp);
    files(
        &src,
        &[
            "keep.txt",
            "x.tmp",
            "keep.tmp",
            "d/y.tmp",
            "cache/",
            "cache/inner",
            "d/cache",
            "anchored",
            "d/anchored",
            "sub/a.log",
            "sub/deep/b.log",
            "c.log",
            "sub/only",
            "sub/deep/only",
            "sub/deep/only-not",
            ".pxarexclude-cli",
        ],
    );
    std::fs::write(src.join("sub/.pxarexclude"), b"# comment\n*.log\n/only\n").unwrap();
    let arch = [format!("root.pxar:{}", s(&src))];
    let ex = [
        "--exclude",
        "*.tmp",
        "--exclude",
        "!keep.tmp",
        "--exclude",
        "cache/",
        "--exclude",
        "/anchored",
    ];
    let out = backup(&store, "host/ex", &arch, &ex);
    ok(&out);
    let got = paths(&store, "host/ex/latest");
    // The top "anchored" is excluded (anchored pattern), d/anchored is not; `cache/`
    // takes the folder, not the file d/cache; sub's `.pxarexclude` holds in sub only.
    let want = [
        "root.pxar.didx",
        ".pxarexclude-cli",
        "c.log",
        "d",
        "d/anchored",
        "d/cache",
        "keep.tmp",
        "keep.txt",
        "sub",
        "sub/.pxarexclude",
        "sub/deep",
        "sub/deep/only",
        "sub/deep/only-not",
    ];
    assert_eq!(got, want);
    // The recorded patterns, as the PBS client writes them; the source folder's own
    // `.pxarexclude-cli` is never read into the archive.
    let stream = cat(&store, "host/ex/latest", "root.pxar");
    let tree = stream::parse(&stream);
    let node = &tree[&b".pxarexclude-cli"[..]];
    let Kind::File { at, len } = node.kind else {
        panic!("a file")
    };
    assert_eq!(
        &stream[at..at + len],
        b"*.tmp\n!keep.tmp\ncache/\n/anchored\n"
    );
    assert_eq!(node.stat.mode, 0o100600);
    assert_eq!((node.stat.uid, node.stat.mtime_secs), (0, 0));

    // A bad pattern is refused before anything is made.
    let out = backup(&store, "host/ex2", &arch, &["--exclude", "a[b"]);
    let err = fails_with(&out, 2);
    assert!(
        err.contains("a[b") && err.contains("exclude pattern"),
        "{err}"
    );
    assert!(!store.join("host/ex2").exists());
}

/// A tmpfs mounted inside the tree, unmounted whatever happens.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", describe(&out));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn other_file_systems_are_skipped_unless_asked_for() {
    let tmp = TempDir::new("pxar-fs");
    let (store, src) = store_and_tree(&tmp);
    files(&src, &["a", "mnt/"]);
    let _mnt = Tmpfs::mount(&src.join("mnt"));
    std::fs::write(src.join("mnt/inside"), b"on tmpfs").unwrap();
    let arch = [format!("root.pxar:{}", s(&src))];
    ok(&backup(&store, "host/fs", &arch, &[]));
    let got = paths(&store, "host/fs/latest");
    assert_eq!(
        got,
        ["root.pxar.didx", "a", "mnt"],
        "the mount point is stored, empty"
    );
    ok(&backup(&store, "host/fs2", &arch, &["--all-file-systems"]));
    let got = paths(&store, "host/fs2/latest");
    assert_eq!(got, ["root.pxar.didx", "a", "mnt", "mnt/inside"]);
}

#[test]
fn an_unreadable_file_is_reported_and_skipped() {
    let tmp = TempDir::new("pxar-unreadable");
    let (store, src) = store_and_tree(&tmp);
    files(&src, &["before", "secret", "zafter"]);
    std::fs::set_permissions(src.join("secret"), PermissionsExt::from_mode(0o000)).unwrap();
    // Root reads anything: run pbsfs without the capabilities that override file modes.
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
        ])
        .arg(BIN)
        .args([
            "backup",
            s(&store),
            "host/u",
            &format!("root.pxar:{}", s(&src)),
        ])
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .unwrap();
    let report = ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("secret") && err.contains("not stored"),
        "{err}"
    );
    assert!(report.contains("1 warning"), "{report}");
    let got = paths(&store, "host/u/latest");
    assert_eq!(got, ["root.pxar.didx", "before", "zafter"]);
    let v = ok(&pbsfs(&["verify", s(&store)]));
    assert!(v.contains("1 ok, 0 failed"), "{v}");
}

#[test]
fn a_file_growing_while_read_is_stored_as_read_with_a_warning() {
    let tmp = TempDir::new("pxar-growing");
    let (store, src) = store_and_tree(&tmp);
    let path = src.join("growing.log");
    std::fs::write(&path, pseudo_random(24 << 20, 5)).unwrap();
    std::fs::write(src.join("other"), b"other").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"appended line\n").unwrap();
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let out = backup(&store, "host/g", &[format!("root.pxar:{}", s(&src))], &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let report = ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("growing.log") && err.contains("changed while being read"),
        "{err}"
    );
    assert!(report.contains(" warning"), "{report}");
    let entries = catalog(&cat(&store, "host/g/latest", "catalog.pcat1"));
    let (_, attr) = entries
        .iter()
        .find(|(p, _)| p.ends_with(b"growing.log"))
        .expect("stored");
    let CatalogAttr::File { size, .. } = attr else {
        panic!("a file")
    };
    assert!(*size >= 24 << 20);
    // Stored as read: the archive's bytes are a prefix of the file as it is now.
    let stream = cat(&store, "host/g/latest", "root.pxar");
    let tree = stream::parse(&stream);
    let Kind::File { at, len } = tree[&b"growing.log"[..]].kind else {
        panic!()
    };
    assert_eq!(len as u64, *size);
    let now = std::fs::read(&path).unwrap();
    assert_eq!(&stream[at..at + len], &now[..len]);
    assert!(paths(&store, "host/g/latest").contains(&"other".to_string()));
}

#[test]
fn a_missing_reused_chunk_of_a_pxar_base_fails_the_backup_and_the_next_run_heals() {
    let tmp = TempDir::new("pxar-heal");
    let (store, src) = store_and_tree(&tmp);
    for i in 0..8 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(64 << 10, i)).unwrap();
    }
    let arch = [format!("root.pxar:{}", s(&src))];
    let at = |t: &'static str| ["--chunk-size", "16K", "--backup-time", t];
    ok(&backup(
        &store,
        "host/h",
        &arch,
        &at("2024-05-02T08:00:00Z"),
    ));
    // A chunk from the middle of the archive's index.
    let snap = store.join("host/h/2024-05-02T08:00:00Z");
    let raw = std::fs::read(snap.join("root.pxar.didx")).unwrap();
    let idx = pbsfs::store::format::index::dynamic::DynamicIndex::parse(&raw).unwrap();
    let digest = idx.entries[idx.entries.len() / 2].1;
    let victim = store
        .join(".chunks")
        .join(digest.prefix())
        .join(digest.to_hex());
    std::fs::remove_file(&victim).unwrap();

    let out = backup(&store, "host/h", &arch, &at("2024-05-02T09:00:00Z"));
    let err = fails_with(&out, 2);
    assert!(
        err.contains(&digest.to_hex()) && err.contains("marked as failed"),
        "{err}"
    );
    let snaps = snapshots_json(&store);
    assert_eq!(snaps.len(), 1, "no new snapshot: {snaps:?}");
    assert_eq!(snaps[0]["verification"]["state"], "failed");
    assert!(!store.join("host/h/2024-05-02T09:00:00Z").exists());

    ok(&backup(
        &store,
        "host/h",
        &arch,
        &at("2024-05-02T10:00:00Z"),
    ));
    assert!(
        victim.exists(),
        "the failed base is not reused: the chunk is written again"
    );
    ok(&pbsfs(&["verify", s(&store)]));
    for snap in snapshots_json(&store) {
        assert_eq!(snap["verification"]["state"], "ok");
    }
}
