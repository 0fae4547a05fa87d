//! `pbsfs restore` never writes outside its target: symlinks in an archive (absolute,
//! relative climbing out, to an outside file) are restored as links and never followed,
//! not even when a second restore brings folders and files under the same names; a
//! target that is itself a symlink is refused; and archives crafted with entry names
//! that climb out (`..`, `../x`, `a/b`, which no encoder writes) fail with an error that
//! names the entry, as does one naming a symlink out and then a folder under the same
//! name. After each, every file outside the target is as it was.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use pbsfs::pxar::encoder::Encoder;
use pbsfs::pxar::format::{self, S_IFDIR, S_IFLNK, S_IFREG};
use pbsfs::store::files::write_index_file;
use pbsfs::store::format::index::dynamic::DynamicIndex;
use pbsfs::store::format::manifest::{CryptMode, FileEntry, Manifest};
use pbsfs::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use pbsfs::Datastore;

use crate::bad_input_pxar::meta;
use crate::common::*;
use crate::mount_util::release_lock;
use crate::security::checksums;

/// A folder beside the target with a file and a folder an escape would change.
fn outside(tmp: &TempDir) -> PathBuf {
    let out = tmp.join("outside");
    fs::create_dir_all(out.join("dir")).unwrap();
    fs::write(out.join("victim"), b"untouched\n").unwrap();
    out
}

/// Everything below `tmp` except the target and the store: what must not change.
fn around(tmp: &TempDir) -> Vec<(PathBuf, String)> {
    checksums(tmp.path())
        .into_iter()
        .filter(|(p, _)| !p.starts_with("target") && !p.starts_with("store"))
        .collect()
}

fn restore(store: &Path, snap: &str, target: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", s(store), snap, "root.pxar", s(target)];
    args.extend_from_slice(extra);
    pbsfs(&args)
}

#[test]
fn symlinks_are_restored_as_links_and_never_followed() {
    let tmp = TempDir::new("restore-links");
    let store = sparse_store(&tmp);
    let out = outside(&tmp);
    // First archive: links out of the target.
    let links = tmp.join("src-links");
    fs::create_dir_all(&links).unwrap();
    symlink(&out, links.join("abs")).unwrap();
    symlink("../outside", links.join("rel")).unwrap();
    symlink(out.join("victim"), links.join("file-link")).unwrap();
    symlink("/nonexistent/deeper/x", links.join("dangling")).unwrap();
    // Second archive: folders and files under the same names.
    let dirs = tmp.join("src-dirs");
    for d in ["abs", "rel", "dangling"] {
        fs::create_dir_all(dirs.join(d)).unwrap();
        fs::write(dirs.join(d).join("victim"), b"pwned\n").unwrap();
    }
    fs::write(dirs.join("file-link"), b"pwned\n").unwrap();
    for (src, time) in [
        (&links, "2024-05-02T08:11:33Z"),
        (&dirs, "2024-05-03T08:11:33Z"),
    ] {
        let arg = format!("root.pxar:{}", s(src));
        ok(&pbsfs(&[
            "backup",
            s(&store),
            "host/x",
            &arg,
            "--backup-time",
            time,
        ]));
    }
    let before = around(&tmp);

    let target = tmp.join("target");
    ok(&restore(
        &store,
        "host/x/2024-05-02T08:11:33Z",
        &target,
        &[],
    ));
    for (name, to) in [
        ("abs", out.clone()),
        ("rel", PathBuf::from("../outside")),
        ("file-link", out.join("victim")),
        ("dangling", PathBuf::from("/nonexistent/deeper/x")),
    ] {
        let p = target.join(name);
        assert!(
            fs::symlink_metadata(&p).unwrap().file_type().is_symlink(),
            "{name}"
        );
        assert_eq!(fs::read_link(&p).unwrap(), to, "{name}");
    }
    assert_eq!(around(&tmp), before, "restore of the links");

    // The second archive over the first: whatever restore does with the links, it
    // writes through none of them.
    let second = restore(
        &store,
        "host/x/2024-05-03T08:11:33Z",
        &target,
        &["--overwrite"],
    );
    assert_eq!(
        around(&tmp),
        before,
        "restore over the links: {}",
        describe(&second)
    );
    ok(&second);
    for d in ["abs", "rel", "dangling"] {
        let p = target.join(d);
        assert!(
            fs::symlink_metadata(&p).unwrap().is_dir(),
            "{d} replaced by a folder"
        );
        assert_eq!(fs::read(p.join("victim")).unwrap(), b"pwned\n");
    }
    let f = target.join("file-link");
    assert!(fs::symlink_metadata(&f).unwrap().is_file());

    // One file of the second archive into a target that is a link to outside.
    let linked = tmp.join("target/into-outside");
    symlink(&out, &linked).unwrap();
    let err = fails(&pbsfs(&[
        "restore",
        s(&store),
        "host/x/2024-05-03T08:11:33Z",
        "root.pxar",
        s(&linked),
        "--path",
        "abs",
        "--overwrite",
    ]));
    assert!(err.contains("into-outside"), "names the target: {err}");
    assert_eq!(around(&tmp), before, "restore into a link");
}

/// A pxar stream written by `build` with placeholder names (the encoder refuses the
/// hostile ones), then each `(placeholder, name)` patched in: the FILENAME and the
/// goodbye hash, so only the names are wrong. Placeholders keep their length.
fn crafted(build: impl FnOnce(&mut Encoder<Vec<u8>>), patches: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), &meta(S_IFDIR | 0o755)).unwrap();
    build(&mut enc);
    let mut raw = enc.finish().unwrap();
    let replace = |raw: &mut Vec<u8>, from: &[u8], to: &[u8]| {
        let at: Vec<usize> = (0..=raw.len() - from.len())
            .filter(|&i| &raw[i..i + from.len()] == from)
            .collect();
        assert_eq!(at.len(), 1, "one placeholder in the stream");
        raw[at[0]..at[0] + to.len()].copy_from_slice(to);
    };
    for (placeholder, name) in patches {
        assert_eq!(placeholder.len(), name.len());
        let nul = |n: &[u8]| [n, &[0]].concat();
        replace(&mut raw, &nul(placeholder), &nul(name));
        replace(
            &mut raw,
            &format::hash(placeholder).to_le_bytes(),
            &format::hash(name).to_le_bytes(),
        );
    }
    raw
}

/// A pxar stream whose root holds one regular file named `name`.
fn stream_with_name(name: &[u8]) -> Vec<u8> {
    let placeholder = vec![b'Q'; name.len()];
    let build = |enc: &mut Encoder<Vec<u8>>| {
        enc.add_file(&placeholder, &meta(S_IFREG | 0o644), b"escaped\n")
            .unwrap();
    };
    crafted(build, &[(&placeholder, name)])
}

/// Store `stream` as `root.pxar.didx` (one chunk) of a new snapshot `host/crafted` at
/// `time`.
fn store_stream(ds: &Datastore, time: i64, stream: &[u8]) -> BackupDir {
    let g = BackupGroup::new(BackupNamespace::root(), BackupType::Host, "crafted").unwrap();
    ds.create_group(&g, "root@pam").unwrap();
    let d = BackupDir::new(g, time).unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
    let digest = ds.chunk_store().insert_plain(stream).unwrap().0;
    let idx = DynamicIndex::new(vec![(stream.len() as u64, digest)], time).unwrap();
    let dir = ds.snapshot_path(&d);
    write_index_file(&dir.join("root.pxar.didx"), &idx.to_bytes(), ds.owner()).unwrap();
    let mut m = Manifest::new(&d);
    m.add_file(&FileEntry {
        filename: "root.pxar.didx".into(),
        crypt_mode: CryptMode::None,
        size: stream.len() as u64,
        csum: idx.csum,
    });
    ds.create_manifest(&d, &m, &lock).unwrap();
    release_lock(ds, &d, lock);
    d
}

#[test]
fn entry_names_that_climb_out_fail_with_a_clear_error_and_write_nothing_outside() {
    let tmp = TempDir::new("restore-names");
    let store = tmp.join("store");
    let ds = Datastore::create(&store, false).unwrap();
    outside(&tmp);
    // The placeholder technique itself: a valid name patched in restores.
    let fine = store_stream(&ds, 1_700_000_000, &stream_with_name(b"fine"));
    let target = tmp.join("target-fine");
    ok(&restore(&store, &fine.to_string(), &target, &[]));
    assert_eq!(fs::read(target.join("fine")).unwrap(), b"escaped\n");
    fs::remove_dir_all(&target).unwrap();

    let before = around(&tmp);
    let names: [&[u8]; 4] = [b"..", b"../outside/victim", b"sub/../../x", b"."];
    for (i, name) in names.into_iter().enumerate() {
        let d = store_stream(&ds, 1_700_000_100 + i as i64, &stream_with_name(name));
        let target = tmp.join("target");
        let out = restore(&store, &d.to_string(), &target, &[]);
        // Exit code 2: an error (1 is reserved for "verify found damage").
        let err = fails_with(&out, 2);
        let shown = String::from_utf8_lossy(name);
        assert!(
            err.contains("root.pxar")
                && err.contains("file name")
                && err.contains(&format!("{shown:?}")),
            "{shown}: the error names the archive and the entry: {err}"
        );
        assert_eq!(around(&tmp), before, "{shown}: {}", describe(&out));
        let left: Vec<_> = fs::read_dir(&target).map_or(Vec::new(), |r| r.collect());
        assert!(left.is_empty(), "{shown}: nothing restored: {left:?}");
        let _ = fs::remove_dir_all(&target);
    }
}

#[test]
fn a_folder_under_the_name_of_a_symlink_out_never_writes_through_it() {
    let tmp = TempDir::new("restore-dup");
    let store = tmp.join("store");
    let ds = Datastore::create(&store, false).unwrap();
    let out = outside(&tmp);
    // `link -> OUTSIDE`, then a folder `link/` holding `victim`: the folder is written
    // as `linl` and renamed, so the archive names `link` twice.
    let build = |enc: &mut Encoder<Vec<u8>>| {
        let to = out.as_os_str().as_encoded_bytes();
        enc.add_symlink(b"link", &meta(S_IFLNK | 0o777), to)
            .unwrap();
        enc.create_directory(b"linl", &meta(S_IFDIR | 0o755))
            .unwrap();
        enc.add_file(b"victim", &meta(S_IFREG | 0o644), b"pwned\n")
            .unwrap();
        enc.finish_directory().unwrap();
    };
    let d = store_stream(&ds, 1_700_000_000, &crafted(build, &[(b"linl", b"link")]));
    let before = around(&tmp);
    let target = tmp.join("target");
    for extra in [&[][..], &["--overwrite"][..]] {
        let out = restore(&store, &d.to_string(), &target, extra);
        assert_eq!(around(&tmp), before, "{extra:?}: {}", describe(&out));
        // The decoder lists a folder whole before anything is made: the duplicate is
        // refused first.
        let err = fails_with(&out, 2);
        assert!(
            err.contains("names not strictly sorted"),
            "{extra:?}: {err}"
        );
        let left: Vec<_> = fs::read_dir(&target).map_or(Vec::new(), |r| r.collect());
        assert!(left.is_empty(), "{extra:?}: nothing restored: {left:?}");
    }
    assert_eq!(fs::read(out.join("victim")).unwrap(), b"untouched\n");
}
