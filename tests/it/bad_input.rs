//! Bad input (issue 12), the harness: each case damages files of a copy of a good store,
//! then one runner checks the CLI (exit code, the object named), the mount (errno, the
//! object named in its log, no blocked thread, flat memory over three equal rounds), that
//! nothing panicked, that the mount read no more than a bound, and that no file of the
//! store changed. The cases are in `bad_input_chunks`, `bad_input_meta` and
//! `bad_input_pxar`.
//!
//! Where each item of the "Bad input" bullet is proven:
//!
//! | bad input | test |
//! |---|---|
//! | truncated / empty chunk, flipped bit, wrong magic, bad CRC | `bad_input_chunks::chunk_damage_...` |
//! | corrupt / truncated zstd frame, zstd bomb | `bad_input_chunks::chunk_damage_...` |
//! | other content, same / different length | `bad_input_chunks::chunk_damage_...` |
//! | encrypted chunk without a key (plain archive) | `bad_input_chunks::chunk_damage_...` (ENOKEY, exit 2) |
//! | encrypted archive without a key | `bad_input_chunks::chunk_damage_...`; verify: `corruption::encrypted_chunks_...`, `restricted::verify_fails_chunks_whose_crypt_mode_...` |
//! | FIFO, device node, symlink, 4 GiB sparse file as a chunk | `bad_input_chunks::chunk_damage_...`; `..::a_4_gib_sparse_chunk_...` (peak RSS) |
//! | truncated / oversized index, wrong magic, absurd size / chunk size | `bad_input_chunks::index_damage_...` |
//! | didx with decreasing / huge end offsets, sparse didx | `bad_input_chunks::index_damage_...` |
//! | FIFO or 4 GiB sparse file as an index | `bad_input_chunks::index_damage_...`; `hostile::giant_sparse_...` (peak RSS) |
//! | manifest: invalid JSON, bomb, wrong backup-time, missing archive, `unprotected` not an object | `bad_input_meta::manifest_damage_...`; `..::a_manifest_bomb_...` (peak RSS) |
//! | notes not a string, verify_state with a bad UPID | `bad_input_meta::manifest_damage_...` |
//! | 10 MiB notes | `bad_input_meta::ten_mib_notes_...` |
//! | names with `..`, newlines, invalid UTF-8 | `bad_input_meta::odd_names_...` |
//! | snapshot folder without a manifest | `bad_input_meta::manifest_damage_...` |
//! | symlinks pointing outside (chunk, index, manifest, notes, owner, group, ns) | `hostile::symlinks_planted_...` (outside unchanged); a chunk in `bad_input_chunks` (store unchanged) |
//! | FIFO or device node where a file is expected | `hostile::a_fifo_where_...` (seven places); chunk, index (`bad_input_chunks`), manifest, blob (`bad_input_meta`) |
//! | pxar: truncated, `/` and `..` names, header past its parent | `pxar_mount::bad_pxar_streams_...`; `bad_input_pxar::pxar_damage_...` (with store and memory checks) |
//! | pxar: goodbye outside its directory, cycle, hardlink forward / outside, payload ref past the stream | `pxar::decoder::tests::bad` (unit); `bad_input_pxar::pxar_damage_...` |

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use pbsfs::store::format::blob;
use pbsfs::Digest;

use crate::common::*;
use crate::mount_util::Mounted;

pub const T: &str = "2024-05-02T08:11:33Z";
pub const SNAP: &str = "vm/100/2024-05-02T08:11:33Z";
pub const PXAR_SNAP: &str = "host/h/2024-05-02T08:11:33Z";
/// What a third round of the same bad reads may add to the mount's resident size.
const RSS_MARGIN_KIB: u64 = 8 * 1024;
/// Any CLI run or mount operation taking longer is a hang.
const DEADLINE: Duration = Duration::from_secs(30);

/// The good store every case starts from (a copy of it): `vm/100` with an image of 8
/// chunks of 4 KiB (random ones stored raw, text ones zstd-compressed) and a config
/// blob, `host/h` with a pxar archive of `a.txt` and `sub/b.txt`.
pub struct Good {
    pub tmp: TempDir,
    pub store: PathBuf,
    pub img: Vec<u8>,
    pub conf: Vec<u8>,
}

pub fn image_bytes() -> Vec<u8> {
    let mut img = pseudo_random(4 * 4096, 21);
    for i in 0..4 * 4096 / 16 {
        img.extend_from_slice(format!("line {i:010}\n").as_bytes());
    }
    img
}

pub fn good_store(tag: &str) -> Good {
    let tmp = TempDir::new(tag);
    let store = sparse_store(&tmp);
    let img = image_bytes();
    let conf = b"boot: order=scsi0\nmemory: 2048\n".to_vec();
    std::fs::write(tmp.join("img"), &img).unwrap();
    std::fs::write(tmp.join("conf"), &conf).unwrap();
    ok(&pbsfs(&[
        "backup",
        s(&store),
        "vm/100",
        &format!("drive-scsi0.img:{}", s(&tmp.join("img"))),
        &format!("qemu-server.conf:{}", s(&tmp.join("conf"))),
        "--chunk-size",
        "4K",
        "--backup-time",
        T,
    ]));
    let tree = tmp.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(tree.join("sub/b.txt"), b"beta\n").unwrap();
    ok(&pbsfs(&[
        "backup",
        s(&store),
        "host/h",
        &format!("root.pxar:{}", s(&tree)),
        "--backup-time",
        T,
    ]));
    Good {
        tmp,
        store,
        img,
        conf,
    }
}

/// One kind of entry of a store, as the before/after comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Dir,
    /// Length, and SHA-256 of the content (of the first MiB for a file over 64 MiB: the
    /// planted sparse giants, whose length and block count then stand for the rest).
    File(u64, u64, Digest),
    Link(PathBuf),
    /// FIFO, socket, device: never opened.
    Special(u32, u64),
}

/// path -> what is there, for every entry of `store`. Lock files are the one legitimate
/// addition of a reader (a shared snapshot lock creates its empty file below `.locks`),
/// so `.locks` is left out; everything else, chunks included, is compared.
pub fn store_state(store: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![store.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(store).unwrap().to_path_buf();
            if rel.starts_with(".locks") {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let seen = if ft.is_dir() {
                todo.push(p.clone());
                Seen::Dir
            } else if ft.is_symlink() {
                Seen::Link(std::fs::read_link(&p).unwrap())
            } else if ft.is_file() {
                use std::io::Read;
                let mut bytes = Vec::new();
                let f = std::fs::File::open(&p).unwrap();
                let cap = if md.len() > 64 << 20 {
                    1 << 20
                } else {
                    u64::MAX
                };
                f.take(cap).read_to_end(&mut bytes).unwrap();
                Seen::File(md.len(), md.blocks(), Digest::of(&bytes))
            } else {
                assert!(ft.is_fifo() || ft.is_char_device() || ft.is_block_device());
                Seen::Special(md.mode(), md.rdev())
            };
            out.insert(rel, seen);
        }
    }
    out
}

/// The store as it was, except `verify_state` in the manifests verify may record.
fn without_verify_state(state: BTreeMap<PathBuf, Seen>, store: &Path) -> BTreeMap<PathBuf, Value> {
    state
        .iter()
        .map(|(rel, seen)| {
            let v = match seen {
                Seen::File(..) if rel.ends_with("index.json.blob") => {
                    let raw = std::fs::read(store.join(rel)).ok();
                    let json = raw.and_then(|r| blob::decode(&r).ok());
                    match json.and_then(|j| serde_json::from_slice::<Value>(&j).ok()) {
                        Some(mut m) => {
                            if let Some(u) = m["unprotected"].as_object_mut() {
                                u.remove("verify_state");
                            }
                            m
                        }
                        None => Value::String(format!("{seen:?}")),
                    }
                }
                other => Value::String(format!("{other:?}")),
            };
            (rel.clone(), v)
        })
        .collect()
}

use serde_json::Value;

#[track_caller]
fn assert_same<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    case: &str,
    when: &str,
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) {
    let mut diff = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diff.push(format!("removed {k:?}")),
            Some(w) if w != v => diff.push(format!("changed {k:?}: {v:?} -> {w:?}")),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        diff.push(format!("added {k:?}"));
    }
    assert!(
        diff.is_empty(),
        "{case}: the store changed {when}:\n{}",
        diff.join("\n")
    );
}

/// Run pbsfs with a deadline (a hang is a failure).
pub fn run(args: &[String]) -> Output {
    let out = Command::new("timeout")
        .arg(DEADLINE.as_secs().to_string())
        .arg(BIN)
        .args(args)
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(124),
        "pbsfs {args:?} hung: {}",
        describe(&out)
    );
    out
}

/// What an operation through the mount must give.
#[derive(Debug, Clone)]
pub enum Want {
    Ok,
    Bytes(Vec<u8>),
    /// A listing holding these names (and maybe others).
    Names(Vec<String>),
    /// A listing without this name.
    Hides(String),
    Errno(i32),
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Read,
    List,
    Stat,
}

/// One damaged store and what must be seen of it.
pub struct Case {
    pub name: &'static str,
    /// Damages the store's copy; returns the name errors must carry (a digest, a file
    /// path, a snapshot).
    pub damage: Box<dyn Fn(&Path) -> String>,
    /// `(args, exit code)`; `{S}` is the store, `{T}` a fresh restore target. A failure
    /// must name the object.
    pub cli: Vec<(Vec<&'static str>, i32)>,
    /// `(op, path in the mount, want)`; an EIO must be logged naming the object.
    pub mount: Vec<(Op, String, Want)>,
    /// `pbsfs verify --keep-bad` of this target ("": the whole store) and its exit code
    /// (verify may change only `verify_state`).
    pub verify: Option<(&'static str, i32)>,
}

fn do_op(op: Op, p: PathBuf) -> Result<Vec<String>, i32> {
    let e = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
    match op {
        Op::Read => std::fs::read(&p)
            .map(|b| vec![format!("{:?}", Digest::of(&b))])
            .map_err(e),
        Op::Stat => std::fs::metadata(&p).map(|_| Vec::new()).map_err(e),
        Op::List => std::fs::read_dir(&p)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .map_err(e),
    }
}

/// `op` on the mount on a thread of its own: a FUSE request that never answers fails
/// the test at the deadline instead of hanging it (the mount's drop then detaches it).
fn op_with_deadline(op: Op, p: PathBuf) -> Result<Vec<String>, i32> {
    let (tx, rx) = mpsc::channel();
    let shown = p.display().to_string();
    std::thread::spawn(move || {
        let _ = tx.send(do_op(op, p));
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{op:?} {shown} through the mount hung"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Bytes the process `pid` has read through read(2) and friends so far (`rchar`): a
/// giant planted file read whole would show here whether it has blocks or is sparse.
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// What the mount may read in three rounds of one case's operations: the store is a few
/// hundred KiB, a planted giant is 4 GiB.
const READ_BOUND: u64 = 64 << 20;

/// Peak RSS (KiB) of `pbsfs ARGS` run by a fresh python (RUSAGE_CHILDREN of that one
/// child only, whatever other tests run meanwhile).
pub fn peak_rss_kib(args: &[&str]) -> (u64, Output) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import resource, subprocess, sys\n\
             r = subprocess.run(sys.argv[1:], capture_output=True)\n\
             sys.stderr.buffer.write(r.stderr)\n\
             print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
             sys.exit(r.returncode)",
        )
        .arg(BIN)
        .args(args)
        .env("PBSFS_PBS_CONFIG_DIR", "/nonexistent-pbsfs-test-config")
        .output()
        .unwrap();
    let kib = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (kib, out)
}

fn no_panic(case: &str, what: &str, text: &str) {
    assert!(
        !text.contains("panicked"),
        "{case}: {what} panicked:\n{text}"
    );
}

/// Check every case, each on its own copy of `good`'s store.
pub fn run_cases(good: &Good, cases: Vec<Case>) {
    for (i, case) in cases.into_iter().enumerate() {
        let dir = good.tmp.join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("store");
        let out = Command::new("cp")
            .arg("-a")
            .arg(&good.store)
            .arg(&store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        run_case(&case, &store, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn run_case(case: &Case, store: &Path, dir: &Path) {
    let name = case.name;
    let named = (case.damage)(store);
    let before = store_state(store);
    // The CLI.
    for (n, (args, code)) in case.cli.iter().enumerate() {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{S}", s(store))
                    .replace("{T}", s(&dir.join(format!("restored{n}"))))
            })
            .collect();
        let out = run(&args);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        no_panic(name, &format!("pbsfs {args:?}"), &all);
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{name}: pbsfs {args:?}: {}",
            describe(&out)
        );
        if *code != 0 {
            assert!(
                stderr(&out).contains(&named),
                "{name}: pbsfs {args:?} does not name {named}: {}",
                describe(&out)
            );
        }
    }
    assert_same(name, "after the CLI", &before, &store_state(store));
    // The mount: three equal rounds.
    let m = Mounted::start(store, &dir.join("mnt"), &[]);
    let pid = m.child.as_ref().unwrap().id();
    let mut after_first = 0;
    let read_before = rchar(pid);
    for round in 1..=3 {
        for (op, rel, want) in &case.mount {
            let got = op_with_deadline(*op, m.path(rel));
            let fine = match (want, &got) {
                (Want::Ok, Ok(_)) => true,
                (Want::Bytes(b), Ok(h)) => h == &vec![format!("{:?}", Digest::of(b))],
                (Want::Names(n), Ok(l)) => n.iter().all(|x| l.contains(x)),
                (Want::Hides(n), Ok(l)) => !l.contains(n),
                (Want::Errno(e), Err(g)) => e == g,
                _ => false,
            };
            assert!(
                fine,
                "{name}: {op:?} {rel} gave {got:?}, want {want:?}; log:\n{}",
                m.log_text()
            );
        }
        if round == 1 {
            after_first = rss_kib(pid);
        }
    }
    let after_third = rss_kib(pid);
    let read = rchar(pid) - read_before;
    assert!(
        read < READ_BOUND,
        "{name}: the mount read {read} bytes in three rounds (bound {READ_BOUND})"
    );
    let log = m.log_text();
    no_panic(name, "the mount", &log);
    if case
        .mount
        .iter()
        .any(|(_, _, w)| matches!(w, Want::Errno(libc::EIO)))
    {
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains(&named)),
            "{name}: the mount's log does not name {named}:\n{log}"
        );
    }
    assert!(
        after_third <= after_first + RSS_MARGIN_KIB,
        "{name}: the mount grew from {after_first} KiB after round 1 to {after_third} KiB \
         after round 3 (margin {RSS_MARGIN_KIB} KiB)"
    );
    m.unmount();
    assert_same(name, "after the mount", &before, &store_state(store));
    // Verify may record verify_state and nothing else.
    if let Some((target, code)) = case.verify {
        // The store is still as before here (checked above): its manifests as they were.
        let unverified = without_verify_state(before, store);
        let mut args = vec!["verify".to_string(), s(store).into(), "--keep-bad".into()];
        // An empty target: the whole store.
        args.extend((!target.is_empty()).then(|| target.to_string()));
        let out = run(&args);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        no_panic(name, "verify", &all);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{name}: verify: {}",
            describe(&out)
        );
        if code != 0 {
            assert!(
                all.contains(&named),
                "{name}: verify does not name {named}: {all}"
            );
        }
        assert_same(
            name,
            "after verify (verify_state aside)",
            &unverified,
            &without_verify_state(store_state(store), store),
        );
    }
}

// ---- damage shared by the case modules ----

pub fn snap_file(store: &Path, snap: &str, file: &str) -> PathBuf {
    store.join(snap).join(file)
}

pub fn replace_with(p: &Path, kind: &str) {
    let _ = std::fs::remove_file(p);
    let out = match kind {
        "fifo" => Command::new("mkfifo").arg(p).output(),
        "device" => Command::new("mknod").arg(p).args(["c", "1", "5"]).output(),
        "sparse" => Command::new("truncate").args(["-s", "4G"]).arg(p).output(),
        _ => unreachable!(),
    }
    .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
}

/// Rewrite a manifest's JSON (blob and CRC valid), as a foreign writer would.
pub fn edit_manifest(store: &Path, snap: &str, change: impl FnOnce(&mut Value)) {
    let p = snap_file(store, snap, "index.json.blob");
    let json = blob::decode(&std::fs::read(&p).unwrap()).unwrap();
    let mut v: Value = serde_json::from_slice(&json).unwrap();
    change(&mut v);
    std::fs::write(
        &p,
        blob::encode(&serde_json::to_vec_pretty(&v).unwrap(), true).unwrap(),
    )
    .unwrap();
}

/// Point the manifest's entry for `file` at an index rewritten consistently (its checksum
/// and size), so only the index's own rules can refuse it.
pub fn set_manifest_entry(store: &Path, snap: &str, file: &str, size: u64, csum: Digest) {
    edit_manifest(store, snap, |m| {
        for f in m["files"].as_array_mut().unwrap() {
            if f["filename"] == file {
                f["size"] = size.into();
                f["csum"] = csum.to_hex().into();
            }
        }
    });
}
