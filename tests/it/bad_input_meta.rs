//! Bad input (issue 12), the manifest, name and metadata cases, through the runner of
//! `bad_input` (CLI, mount, no panic, flat memory, store unchanged): damaged manifests,
//! odd values in `unprotected`, a snapshot folder without a manifest, odd names in the
//! datastore, and 10 MiB notes (valid: readable in full, an edit refused with EFBIG).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use pbsfs::store::format::blob;
use serde_json::json;

use crate::bad_input::*;
use crate::common::*;
use crate::mount_util::Mounted;

/// What a snapshot whose manifest cannot be used must give: exit 2 naming it, EIO for
/// its archives, notes and manifest.json in the mount, its neighbours untouched.
fn unusable(name: &'static str, damage: impl Fn(&Path) + 'static) -> Case {
    let eio = Want::Errno(libc::EIO);
    Case {
        name,
        damage: Box::new(move |store| {
            damage(store);
            SNAP.to_string()
        }),
        cli: vec![
            (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 2),
            (vec!["restore", "{S}", SNAP, "qemu-server.conf", "{T}"], 2),
            (vec!["notes", "{S}", SNAP], 2),
            (vec!["snapshots", "{S}"], 0),
            (vec!["cat", "{S}", PXAR_SNAP, "root.pxar/a.txt"], 0),
        ],
        mount: vec![
            (Op::List, "vm/100".into(), Want::Names(vec![T.into()])),
            (Op::List, SNAP.into(), Want::Names(vec!["notes".into()])),
            (Op::Read, format!("{SNAP}/drive-scsi0.img"), eio.clone()),
            (Op::Read, format!("{SNAP}/notes"), eio.clone()),
            (Op::Read, format!("{SNAP}/manifest.json"), eio),
            (
                Op::Read,
                format!("{PXAR_SNAP}/root.pxar/sub/b.txt"),
                Want::Bytes(b"beta\n".to_vec()),
            ),
        ],
        verify: Some((SNAP, 1)),
    }
}

/// A manifest blob (magic and CRC valid) of zstd frames that decode to 2 GiB of zeros.
fn manifest_bomb() -> Vec<u8> {
    let one = blob::encode(&vec![0u8; 64 << 20], true).unwrap();
    let payload: Vec<u8> = std::iter::repeat_n(&one[12..], 32)
        .flatten()
        .copied()
        .collect();
    let mut out = one[..8].to_vec();
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A manifest that decodes and describes its folder, with one odd value: served, shown
/// as PBS shows it, never rewritten by reading.
fn odd_but_readable(
    name: &'static str,
    mount: Vec<(Op, String, Want)>,
    change: fn(&mut serde_json::Value),
) -> Case {
    Case {
        name,
        damage: Box::new(move |store| {
            edit_manifest(store, SNAP, change);
            SNAP.to_string()
        }),
        cli: vec![
            (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 0),
            (vec!["notes", "{S}", SNAP], 0),
            (vec!["snapshots", "{S}"], 0),
        ],
        mount,
        verify: Some((SNAP, 0)),
    }
}

#[test]
fn manifest_damage_is_named_refused_and_changes_nothing() {
    let good = good_store("bad-manifest");
    let manifest = |store: &Path| snap_file(store, SNAP, "index.json.blob");
    let img = format!("{SNAP}/drive-scsi0.img");
    let cases = vec![
        unusable("manifest of invalid JSON", move |store| {
            let p = manifest(store);
            std::fs::write(
                &p,
                blob::encode(b"{\"backup-type\": \"vm\", ", true).unwrap(),
            )
            .unwrap();
        }),
        unusable("manifest decoding to 2 GiB", move |store| {
            std::fs::write(manifest(store), manifest_bomb()).unwrap();
        }),
        unusable("manifest whose backup-time is not its folder's", |store| {
            edit_manifest(store, SNAP, |m| m["backup-time"] = json!(1_714_637_494));
        }),
        unusable("manifest whose unprotected is not an object", |store| {
            edit_manifest(store, SNAP, |m| m["unprotected"] = json!(["notes"]));
        }),
        unusable("manifest listing ../evil.fidx", |store| {
            edit_manifest(store, SNAP, |m| {
                m["files"][0]["filename"] = json!("../evil.img.fidx")
            });
        }),
        Case {
            name: "manifest naming a missing archive",
            damage: Box::new(|store| {
                edit_manifest(store, SNAP, |m| {
                    let mut extra = m["files"][0].clone();
                    extra["filename"] = json!("drive-scsi1.img.fidx");
                    m["files"].as_array_mut().unwrap().push(extra);
                });
                "drive-scsi1.img.fidx".to_string()
            }),
            cli: vec![
                (vec!["cat", "{S}", SNAP, "drive-scsi1.img"], 2),
                (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 0),
                (vec!["notes", "{S}", SNAP], 0),
            ],
            mount: vec![
                // Listed but missing is damage (verify says so too), not "no such file".
                (
                    Op::Read,
                    format!("{SNAP}/drive-scsi1.img"),
                    Want::Errno(libc::EIO),
                ),
                (Op::Read, img.clone(), Want::Bytes(good.img.clone())),
            ],
            verify: Some((SNAP, 1)),
        },
        odd_but_readable(
            "notes that are not a string (shown empty, as PBS does)",
            vec![
                (Op::Read, format!("{SNAP}/notes"), Want::Bytes(Vec::new())),
                (Op::Read, img.clone(), Want::Bytes(good.img.clone())),
            ],
            |m| m["unprotected"]["notes"] = json!({"not": "a string"}),
        ),
        odd_but_readable(
            "verify_state with a bad UPID",
            vec![
                (Op::Read, format!("{SNAP}/verify_state"), Want::Ok),
                (Op::Read, img.clone(), Want::Bytes(good.img.clone())),
            ],
            |m| m["unprotected"]["verify_state"] = json!({"state": "ok", "upid": "UPID:x"}),
        ),
        Case {
            name: "snapshot folder without a manifest (hidden, untouched)",
            damage: Box::new(move |store| {
                std::fs::remove_file(manifest(store)).unwrap();
                SNAP.to_string()
            }),
            cli: vec![
                (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 2),
                (vec!["notes", "{S}", SNAP], 2),
                (vec!["snapshots", "{S}"], 0),
                (vec!["snapshots", "{S}", "--all"], 0),
            ],
            mount: vec![
                (Op::List, "vm/100".into(), Want::Hides(T.into())),
                (Op::Stat, SNAP.into(), Want::Errno(libc::ENOENT)),
                (Op::Read, img.clone(), Want::Errno(libc::ENOENT)),
            ],
            verify: None,
        },
        Case {
            name: "device node as a manifest",
            damage: Box::new(move |store| {
                replace_with(&manifest(store), "device");
                SNAP.to_string()
            }),
            cli: vec![
                (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 2),
                (vec!["snapshots", "{S}"], 0),
            ],
            mount: vec![
                (Op::List, "vm/100".into(), Want::Hides(T.into())),
                (Op::Read, img.clone(), Want::Errno(libc::ENOENT)),
            ],
            verify: None,
        },
        Case {
            name: "FIFO as a blob",
            damage: Box::new(move |store| {
                replace_with(&snap_file(store, SNAP, "qemu-server.conf.blob"), "fifo");
                "qemu-server.conf.blob".to_string()
            }),
            cli: vec![
                (vec!["cat", "{S}", SNAP, "qemu-server.conf"], 2),
                (vec!["restore", "{S}", SNAP, "qemu-server.conf", "{T}"], 2),
                (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 0),
            ],
            mount: vec![
                (
                    Op::Read,
                    format!("{SNAP}/qemu-server.conf"),
                    Want::Errno(libc::EIO),
                ),
                (Op::Read, img.clone(), Want::Bytes(good.img.clone())),
            ],
            verify: Some((SNAP, 1)),
        },
        Case {
            name: "FIFO as a manifest",
            damage: Box::new(move |store| {
                replace_with(&manifest(store), "fifo");
                SNAP.to_string()
            }),
            cli: vec![
                (vec!["cat", "{S}", SNAP, "drive-scsi0.img"], 2),
                (vec!["notes", "{S}", SNAP], 2),
                (vec!["snapshots", "{S}"], 0),
            ],
            mount: vec![
                (Op::List, "vm/100".into(), Want::Hides(T.into())),
                (Op::Read, img.clone(), Want::Errno(libc::ENOENT)),
            ],
            verify: None,
        },
    ];
    run_cases(&good, cases);
}

/// A manifest bomb costs at most the manifest decode limit (128 MiB, PBS's largest
/// blob), never the 2 GiB it expands to.
#[test]
fn a_manifest_bomb_is_refused_within_the_blob_limit() {
    let good = good_store("bad-bomb");
    std::fs::write(
        snap_file(&good.store, SNAP, "index.json.blob"),
        manifest_bomb(),
    )
    .unwrap();
    let (kib, out) = peak_rss_kib(&["cat", s(&good.store), SNAP, "qemu-server.conf"]);
    let err = fails_with(&out, 2);
    assert!(err.contains(SNAP) && err.contains("more than"), "{err}");
    assert!(
        kib < 200 * 1024,
        "a 2 GiB manifest bomb peaked at {kib} KiB"
    );
}

/// Exactly 10 MiB of notes, one line per 64 bytes.
fn ten_mib() -> String {
    (0..(10 << 20) / 64).map(|i| format!("{i:063}\n")).collect()
}

#[test]
fn ten_mib_notes_are_read_in_full_and_an_edit_through_the_mount_gets_efbig() {
    let good = good_store("bad-notes");
    let notes = ten_mib();
    let set = move |store: &Path| {
        edit_manifest(store, SNAP, |m| {
            m["unprotected"]["notes"] = json!(ten_mib())
        });
        SNAP.to_string()
    };
    // Valid PBS data: served in full by the CLI and the mount, every round.
    run_cases(
        &good,
        vec![Case {
            name: "10 MiB notes",
            damage: Box::new(set),
            cli: vec![(vec!["notes", "{S}", SNAP], 0)],
            mount: vec![(
                Op::Read,
                format!("{SNAP}/notes"),
                Want::Bytes(notes.clone().into_bytes()),
            )],
            verify: Some((SNAP, 0)),
        }],
    );
    let store = &good.store;
    set(store);
    let out = run(&["notes".into(), s(store).into(), SNAP.into()]);
    assert!(
        out.status.success() && out.stdout == notes.as_bytes(),
        "{}",
        describe(&out)
    );
    let before = store_state(store);
    // Through the CLI: refused, naming the snapshot.
    let longer = good.tmp.join("longer");
    std::fs::write(&longer, format!("{notes}one more line\n")).unwrap();
    let out = run(&[
        "notes".into(),
        s(store).into(),
        SNAP.into(),
        "--set-file".into(),
        s(&longer).into(),
    ]);
    let err = fails_with(&out, 2);
    assert!(err.contains(SNAP) && err.contains("exceed"), "{err}");
    // An edit through the mount: appending, or writing it all back with one more line.
    let m = Mounted::start(store, &good.tmp.join("mnt"), &[]);
    let path = m.path(&format!("{SNAP}/notes"));
    let append = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    let e = (&append).write_all(b"one more line\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG), "append: {e}");
    drop(append);
    // The rewrite runs in a child process: a descriptor open in this (threaded, forking)
    // test process is inherited by other tests' children until their exec, whose close
    // is a FLUSH, which commits what was written so far (the commit rule), so the
    // partial rewrite would be committed before the refusal.
    let longer = good.tmp.join("longer-mount");
    std::fs::write(&longer, format!("{notes}one more line\n")).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import errno, sys\ndata = open(sys.argv[1], 'rb').read()\ntry:\n    f = open(sys.argv[2], 'wb')\n    f.write(data)\n    f.close()\nexcept OSError as e:\n    sys.exit(7 if e.errno == errno.EFBIG else 1)\n",
        ])
        .arg(&longer)
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "rewrite: {}", describe(&out));
    assert_eq!(std::fs::read(&path).unwrap(), notes.as_bytes());
    let log = m.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(m.commits(), 0, "{log}");
    m.unmount();
    let after = store_state(store);
    assert!(before == after, "the store changed");
}

/// Copies of the group `vm/100` under names PBS never makes: each is skipped, never
/// shown, never read, and nothing changes.
#[test]
fn odd_names_in_the_datastore_are_skipped_and_change_nothing() {
    use std::os::unix::ffi::OsStrExt;
    let good = good_store("bad-names");
    let odd: Vec<&[u8]> = vec![b"vm/a\nb", b"vm/..x", b"vm/\xff\xfe", b"ns/a\nb", b"ns/..y"];
    let plant = |store: &Path| {
        for name in [b"vm/a\nb" as &[u8], b"vm/..x", b"vm/\xff\xfe"] {
            let to = store.join(std::ffi::OsStr::from_bytes(name));
            let out = Command::new("cp")
                .arg("-a")
                .arg(store.join("vm/100"))
                .arg(&to)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe(&out));
        }
        for ns in [b"ns/a\nb" as &[u8], b"ns/..y"] {
            let to = store.join(std::ffi::OsStr::from_bytes(ns));
            std::fs::create_dir_all(&to).unwrap();
            let out = Command::new("cp")
                .arg("-a")
                .arg(store.join("vm"))
                .arg(to.join("vm"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe(&out));
        }
        // A snapshot folder whose name has a newline, a file with one in a snapshot.
        let out = Command::new("cp")
            .arg("-a")
            .arg(store.join(SNAP))
            .arg(store.join(format!("{SNAP}\n")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        std::fs::write(store.join(SNAP).join("x\n.img.fidx"), b"x").unwrap();
        String::new()
    };
    let mut mount: Vec<(Op, String, Want)> = vec![
        (Op::List, "vm".into(), Want::Names(vec!["100".into()])),
        (Op::List, "vm/100".into(), Want::Hides(format!("{T}\n"))),
        (Op::List, SNAP.into(), Want::Hides("x\n.img".into())),
        (Op::Stat, "vm/..x".into(), Want::Errno(libc::ENOENT)),
        (
            Op::Read,
            format!("{SNAP}/drive-scsi0.img"),
            Want::Bytes(good.img.clone()),
        ),
    ];
    for hidden in ["a\nb", "..x", "\u{fffd}\u{fffd}"] {
        mount.push((Op::List, "vm".into(), Want::Hides(hidden.into())));
    }
    // No valid namespace: no `ns` folder at all.
    mount.push((Op::Stat, "ns".into(), Want::Errno(libc::ENOENT)));
    run_cases(
        &good,
        vec![Case {
            name: "odd names",
            damage: Box::new(plant),
            cli: vec![
                (vec!["groups", "{S}"], 0),
                (vec!["snapshots", "{S}", "--all"], 0),
            ],
            mount,
            verify: Some(("", 0)),
        }],
    );
    // And the CLI's listings show none of them.
    plant(&good.store);
    for args in [vec!["groups"], vec!["snapshots", "--all"]] {
        let mut a: Vec<String> = args.iter().map(|x| x.to_string()).collect();
        a.insert(1, s(&good.store).into());
        let out = run(&a);
        let text = ok(&out);
        for bad in &odd {
            let tail = String::from_utf8_lossy(&bad[3..]).into_owned();
            assert!(!text.contains(&tail), "{args:?} shows {tail:?}:\n{text}");
        }
        // Rows of the two real groups only (and the header).
        let rows = text
            .lines()
            .filter(|l| !l.starts_with("vm/100") && !l.starts_with("host/h"));
        assert_eq!(rows.count(), 1, "{args:?}:\n{text}");
    }
}
