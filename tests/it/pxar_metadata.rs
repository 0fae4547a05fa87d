//! Metadata change detection, end to end (issue 10's "must show"): a 2,000-file tree
//! backed up with `--change-detection-mode metadata --chunk-size 64K`, then again
//! unchanged: the second run reads no byte of any source file (counted with
//! `strace -f -y -e trace=read,pread64` on the source paths, and by the summary),
//! writes under 1% new chunk bytes and restores identical; then one file changed in the
//! middle, one added, one removed, one renamed and one with only its mode changed: the
//! third run reads exactly the changed, added, renamed and mode-changed files, and
//! restore, the mount and `pbsfs diff` show exactly those changes.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::mount_util::Mounted;
use crate::pxar_mount::{assert_same, snapshot};

const GROUP: &str = "host/tree";
const T1: &str = "2024-06-01T00:00:00Z";
const T2: &str = "2024-06-02T00:00:00Z";
const T3: &str = "2024-06-03T00:00:00Z";

/// 20 folders of 100 files, 1 byte to 8 KiB each, a few empty.
fn build(root: &Path) {
    for d in 0..20u64 {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100u64 {
            let len = if f % 37 == 5 {
                0
            } else {
                1 + ((d * 7919 + f * 104_729) % 8192) as usize
            };
            std::fs::write(
                dir.join(format!("f{f:03}")),
                pseudo_random(len, d * 100 + f),
            )
            .unwrap();
        }
    }
}

/// A metadata-mode backup under strace: its stdout and the source files it read
/// (`read`/`pread64` calls on descriptors whose path is below `src`).
fn traced_backup(store: &Path, src: &Path, time: &str) -> (String, BTreeSet<String>) {
    let log = store.with_extension(format!("strace-{time}"));
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=read,pread64", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(["backup", s(store), GROUP])
        .arg(format!("root.pxar:{}", s(src)))
        .args(["--change-detection-mode", "metadata", "--chunk-size", "64K"])
        .args(["--backup-time", time])
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .expect("strace is installed (scripts/test.sh installs it)");
    let stdout = ok(&out);
    let trace = std::fs::read_to_string(&log).unwrap();
    let prefix = format!("<{}/", s(src));
    let mut read = BTreeSet::new();
    for line in trace.lines() {
        if !(line.contains(" read(") || line.contains(" pread64(")) {
            continue;
        }
        if let Some(at) = line.find(&prefix) {
            let rest = &line[at + prefix.len()..];
            read.insert(rest[..rest.find('>').unwrap()].to_string());
        }
    }
    // The trace must have seen the process at all (a broken strace cannot pass).
    assert!(trace.contains("read("), "no read calls traced at all");
    (stdout, read)
}

/// (files re-read, files referenced) from the summary line.
fn files_line(stdout: &str) -> (u64, u64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("files: "))
        .unwrap_or_else(|| panic!("no files: line in {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| words[i].parse::<u64>().unwrap();
    let referenced = words.iter().position(|w| *w == "referenced").unwrap() - 1;
    (n(1), n(referenced))
}

/// (logical bytes, new bytes) from the first summary line.
fn bytes_line(stdout: &str) -> (u64, u64) {
    let line = stdout.lines().next().unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let total = words[1].parse().unwrap();
    let new_bytes = line
        .split(", ")
        .find(|p| p.ends_with(" new bytes"))
        .and_then(|p| p.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    (total, new_bytes)
}

fn restore(store: &Path, snap: &str, to: &Path) {
    ok(&pbsfs(&["restore", s(store), snap, "root.pxar", s(to)]));
}

#[test]
fn an_unchanged_tree_is_not_read_and_five_changes_are_all_that_is_read() {
    let tmp = TempDir::new("pxar-metadata");
    let store = sparse_store(&tmp);
    let src = tmp.join("src");
    build(&src);

    // First run: no earlier split archive, every file read.
    let (out1, read1) = traced_backup(&store, &src, T1);
    assert_eq!(files_line(&out1), (2000, 0), "{out1}");
    assert_eq!(read1.len(), 2000 - 20 * 3, "the non-empty files are read");

    // Second run, unchanged: no source byte read, nothing new worth counting.
    let (out2, read2) = traced_backup(&store, &src, T2);
    assert!(read2.is_empty(), "read unchanged files: {read2:?}");
    assert_eq!(files_line(&out2), (0, 2000), "{out2}");
    let (total, new_bytes) = bytes_line(&out2);
    assert!(
        new_bytes * 100 < total,
        "an unchanged run wrote {new_bytes} new of {total} bytes: {out2}"
    );
    let want = snapshot(&src, false);
    let r2 = tmp.join("r2");
    restore(&store, &format!("{GROUP}/{T2}"), &r2);
    assert_same("restore of the unchanged run", &want, &snapshot(&r2, false));
    ok(&pbsfs(&["verify", s(&store)]));

    // Five changes.
    let changed = src.join("d10/f050");
    let mut data = std::fs::read(&changed).unwrap();
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&changed, &data).unwrap();
    std::fs::write(src.join("d03/new"), b"a file that was not there\n").unwrap();
    std::fs::remove_file(src.join("d05/f006")).unwrap();
    std::fs::rename(src.join("d07/f007"), src.join("d07/g007")).unwrap();
    std::fs::set_permissions(src.join("d12/f012"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let (out3, read3) = traced_backup(&store, &src, T3);
    let expected: BTreeSet<String> = ["d10/f050", "d03/new", "d07/g007", "d12/f012"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(read3, expected, "exactly the changed files are read");
    assert_eq!(files_line(&out3), (4, 1996), "{out3}");

    // Restore shows all five changes.
    let want = snapshot(&src, false);
    let r3 = tmp.join("r3");
    restore(&store, &format!("{GROUP}/{T3}"), &r3);
    assert_same("restore after five changes", &want, &snapshot(&r3, false));
    assert!(!r3.join("d05/f006").exists() && !r3.join("d07/f007").exists());

    // So does the mount.
    let m = Mounted::start(&store, &tmp.join("mnt"), &[]);
    let root = m.path(&format!("{GROUP}/{T3}/root.pxar"));
    assert_same(
        "the mount after five changes",
        &want,
        &snapshot(&root, false),
    );
    let mode = std::fs::metadata(root.join("d12/f012"))
        .unwrap()
        .permissions();
    assert_eq!(mode.mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(root.join("d10/f050")).unwrap(), data);
    m.unmount();

    // And `pbsfs diff` lists exactly them (a rename is a removal and an addition).
    let diff = ok(&pbsfs(&[
        "diff",
        s(&store),
        &format!("{GROUP}/{T2}"),
        &format!("{GROUP}/{T3}"),
    ]));
    let lines: BTreeSet<String> = diff
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let want: BTreeSet<String> = [
        "M root.pxar/d10/f050",
        "+ root.pxar/d03/new",
        "- root.pxar/d05/f006",
        "- root.pxar/d07/f007",
        "+ root.pxar/d07/g007",
        "U root.pxar/d12/f012",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    assert_eq!(lines, want, "{diff}");
    ok(&pbsfs(&["verify", s(&store)]));
}
