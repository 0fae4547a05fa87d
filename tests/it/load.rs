//! One mount under load: 8 readers of different snapshots and archives (images, and
//! files inside pxar trees, read with O_DIRECT so every read reaches the mount rather
//! than the page cache) and 2 notes editors (shell processes saving in a loop) for two
//! equal rounds. No read fails or returns a wrong byte (SHA-256 against the source), no
//! save fails, every notes read is a whole value someone wrote, the mount's open file
//! descriptors come back to their count before the load (its `/dev/fuse` channels, one
//! per worker thread, apart: they are a fixed pool, the same after each round), and its
//! resident size after the second round is within ROUND_MARGIN of the first (a leak
//! per request would show as growth). Each round lasts `PBSFS_LOAD_SECS` seconds, 30 by
//! default: the 60 s of load in two halves, to keep the suite's run time
//! modest. The absolute memory bound belongs to the bench and to `mount_memory`.

use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pbsfs::Digest;

use crate::common::*;
use crate::mount_util::*;

const MIB: u64 = 1 << 20;
/// What a second, equal round may add to the resident size. After the first round the
/// chunk cache (24 MiB) is full and every path has run; what remains is allocator noise
/// between the serving threads' arenas, the same margin `mount_memory` allows. A leak of
/// even 1 KiB per request would exceed it: a round serves tens of thousands.
const ROUND_MARGIN: u64 = 16 * MIB;
const READERS: usize = 8;
const EDITORS: usize = 2;

fn round_secs() -> u64 {
    std::env::var("PBSFS_LOAD_SECS")
        .ok()
        .map(|v| v.parse().expect("PBSFS_LOAD_SECS: seconds"))
        .unwrap_or(30)
}

/// An image of a snapshot: (name, length, chunk size).
type Image = (&'static str, usize, u64);

/// Files to read (relative to the mount) and the digest of their content.
type Targets = Vec<(String, Digest)>;

/// Four image snapshots (5 images of 2-4 MiB, chunks of 64 KiB to 1 MiB) and two pxar
/// snapshots of generated trees (60 files of up to 300 KiB each, 64 KiB chunks): more
/// distinct data than the chunk cache holds, so it keeps evicting. Returns the readers'
/// targets, one list per reader.
fn build(tmp: &TempDir, store: &Path) -> Vec<Targets> {
    let ds = pbsfs::Datastore::create(store, false).unwrap();
    let mut readers = Vec::new();
    let images: [(&str, i64, &[Image]); 4] = [
        ("101", T1, &[("drive-scsi0.img", 4 << 20, 64 << 10)]),
        ("101", T2, &[("drive-scsi0.img", 3 << 20, 256 << 10)]),
        (
            "102",
            T1,
            &[
                ("drive-scsi0.img", 2 << 20, 1 << 20),
                ("drive-scsi1.img", (3 << 20) + 4097, 64 << 10),
            ],
        ),
        ("103", T1, &[("drive-efidisk0.img", 2 << 20, 128 << 10)]),
    ];
    for (n, (id, time, imgs)) in images.into_iter().enumerate() {
        let mut spec = SnapSpec::vm(id, time);
        let mut targets = Vec::new();
        let dir = pbsfs::util::time::format_utc(time).unwrap();
        for (i, (name, len, chunk)) in imgs.iter().enumerate() {
            let data = pseudo_random(*len, 100 + (n * 10 + i) as u64);
            targets.push((format!("vm/{id}/{dir}/{name}"), Digest::of(&data)));
            spec.images.push((name, data, *chunk));
        }
        make_snapshot(&ds, &spec);
        readers.push(targets);
    }
    for (n, id) in ["tree1", "tree2"].into_iter().enumerate() {
        let src = tmp.join(id);
        let mut files = Vec::new();
        for f in 0..60 {
            let rel = format!("d{}/f{f:02}", f % 6);
            let len = (f * 5_003 + n * 70_001) % (300 << 10);
            let data = pseudo_random(len, 1_000 + (n * 100 + f) as u64);
            fs::create_dir_all(src.join(format!("d{}", f % 6))).unwrap();
            fs::write(src.join(&rel), &data).unwrap();
            files.push((rel, Digest::of(&data)));
        }
        let arg = format!("root.pxar:{}", s(&src));
        ok(&pbsfs(&[
            "backup",
            s(store),
            &format!("host/{id}"),
            &arg,
            "--chunk-size",
            "64K",
            "--backup-time",
            "2024-05-04T08:11:33Z",
        ]));
        // Two readers per tree, each on half of its files.
        for half in 0..2 {
            readers.push(
                files
                    .iter()
                    .skip(half)
                    .step_by(2)
                    .map(|(rel, d)| {
                        let p = format!("host/{id}/2024-05-04T08:11:33Z/root.pxar/{rel}");
                        (p, *d)
                    })
                    .collect(),
            );
        }
    }
    assert_eq!(readers.len(), READERS);
    readers
}

/// The notes the editors save: (mount path, initial value).
const EDITED: [&str; EDITORS] = [
    "vm/101/2024-05-02T08:11:33Z/notes",
    "host/tree1/2024-05-04T08:11:33Z/notes",
];

/// Every byte of `p`, read with O_DIRECT in 1 MiB requests.
fn read_direct(p: &Path, buf: &mut [u8]) -> std::io::Result<(Digest, u64)> {
    let mut f = fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(p)?;
    let mut all = Vec::new();
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok((Digest::of(&all), all.len() as u64));
        }
        all.extend_from_slice(&buf[..n]);
    }
}

/// A notes value is the initial one (empty) or a whole line an editor wrote.
fn whole_value(v: &str) -> bool {
    v.is_empty()
        || v.strip_prefix("editor ")
            .and_then(|r| r.strip_suffix('\n'))
            .is_some_and(|r| !r.contains('\n') && r.split(" save ").count() == 2)
}

/// A shell saving `notes` with `printf > notes` until `secs` pass; prints its count.
fn editor(notes: &Path, n: usize, secs: u64) -> Child {
    let script = format!(
        "end=$(( $(date +%s) + {secs} )); i=0; \
         while [ $(date +%s) -lt $end ]; do i=$((i+1)); \
         printf 'editor {n} save %d\\n' $i > '{}' || {{ echo \"save $i failed\" >&2; exit 1; }}; \
         done; echo $i",
        s(notes)
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// One round: the readers and editors for `secs`; returns a line of counts. Any error,
/// wrong byte or torn notes value fails the test.
fn round(m: &Mounted, readers: &[Targets], secs: u64) -> (String, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let bytes = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let editors: Vec<Child> = EDITED
        .iter()
        .enumerate()
        .map(|(n, p)| editor(&m.path(p), n, secs))
        .collect();
    let errors: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = readers
            .iter()
            .enumerate()
            .map(|(r, targets)| {
                let (bytes, reads) = (&bytes, &reads);
                scope.spawn(move || {
                    let mut buf = vec![0u8; MIB as usize];
                    let mut errors = Vec::new();
                    while Instant::now() < end && errors.is_empty() {
                        for (rel, want) in targets {
                            let p = m.path(rel);
                            match read_direct(&p, &mut buf) {
                                Ok((d, len)) if d == *want => {
                                    bytes.fetch_add(len, Ordering::Relaxed);
                                }
                                Ok((d, _)) => {
                                    errors.push(format!("{rel}: content {d}, want {want}"))
                                }
                                Err(e) => errors.push(format!("{rel}: {e}")),
                            }
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        // The edited notes, read while saves land: never a torn value.
                        let notes = m.path(EDITED[r % EDITORS]);
                        match fs::read_to_string(&notes) {
                            Ok(v) if whole_value(&v) => {}
                            Ok(v) => errors.push(format!("{}: torn value {v:?}", notes.display())),
                            Err(e) => errors.push(format!("{}: {e}", notes.display())),
                        }
                    }
                    errors
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut saves = Vec::new();
    for (n, e) in editors.into_iter().enumerate() {
        let out = e.wait_with_output().unwrap();
        let count: u64 = ok(&out).trim().parse().unwrap();
        assert!(count > 0, "editor {n} saved");
        let last = format!("editor {n} save {count}\n");
        assert_eq!(fs::read_to_string(m.path(EDITED[n])).unwrap(), last);
        saves.push(count);
    }
    assert!(
        errors.is_empty(),
        "{} errors:\n{}",
        errors.len(),
        errors.join("\n")
    );
    let bytes = bytes.into_inner();
    let line = format!(
        "{} reads, {} MiB, saves {saves:?}",
        reads.into_inner(),
        bytes / MIB
    );
    (line, bytes)
}

/// What each open file descriptor of `pid` is (`/proc/PID/fd/N -> TARGET`), sorted.
fn fds_of(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            Some(format!("{} -> {:?}", p.display(), fs::read_link(&p).ok()?))
        })
        .collect();
    v.sort();
    v
}

/// The server's channels to the kernel: one `/dev/fuse` per worker thread, cloned as
/// each worker starts, which can be after the mount shows in mountinfo.
fn is_channel(fd: &str) -> bool {
    fd.ends_with("\"/dev/fuse\"")
}

/// Open file descriptors of `pid` other than its channels.
fn fd_count(pid: u32) -> usize {
    fds_of(pid).iter().filter(|f| !is_channel(f)).count()
}

fn channels(pid: u32) -> usize {
    fds_of(pid).iter().filter(|f| is_channel(f)).count()
}

fn rss(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn eight_readers_and_two_editors_get_every_byte_right_and_leak_nothing() {
    let tmp = TempDir::new("load");
    let store = tmp.join("store");
    let readers = build(&tmp, &store);
    let m = Mounted::start(&store, &tmp.join("mnt"), &[]);
    let pid = m.child.as_ref().unwrap().id();
    let fds = fd_count(pid);
    let fds_before = fds_of(pid);
    let secs = round_secs();
    let mut rss_after = Vec::new();
    let mut workers = Vec::new();
    let mut read = 0;
    for n in 1..=2 {
        let (counts, bytes) = round(&m, &readers, secs);
        read += bytes;
        // Releases reach the server after the closes return: poll for them. At most
        // as many as before, not exactly: the baseline may hold a listing readahead
        // thread's folder for a moment (vfs/warm.rs).
        let back = poll(10, || fd_count(pid) <= fds);
        assert!(
            back,
            "round {n}: {} fds open besides the channels, {fds} before:\n{:#?}\nnow:\n{:#?}",
            fd_count(pid),
            fds_before,
            fds_of(pid)
        );
        // The workers are a fixed pool: all started during round 1, none added later.
        workers.push(channels(pid));
        rss_after.push(rss(pid));
        eprintln!("round {n}: {counts}; RSS {} MiB", rss(pid) / MIB);
    }
    assert_eq!(
        workers[0], workers[1],
        "/dev/fuse channels after each round"
    );
    assert!(
        rss_after[1] <= rss_after[0] + ROUND_MARGIN,
        "RSS grew from {} to {} MiB in an equal second round (margin {} MiB)",
        rss_after[0] / MIB,
        rss_after[1] / MIB,
        ROUND_MARGIN / MIB
    );
    let log = m.log.clone();
    m.unmount();
    // O_DIRECT took every read to the mount: it served at least what was read (its
    // statistics line at unmount).
    let text = fs::read_to_string(&log).unwrap();
    let served: u64 = text
        .lines()
        .rev()
        .find_map(|l| l.split("content bytes served: ").nth(1))
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no statistics line in the log:\n{text}"));
    assert!(
        served >= read,
        "served {served} bytes, the readers read {read}"
    );
}
