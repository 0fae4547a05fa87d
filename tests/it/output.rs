//! `--output-format` of the listing commands (snapshots, groups, namespaces, notes,
//! catalog, find, diff): JSON parsed and checked against the store the test made, `json`
//! one line (streams: one object per line), `json-pretty` the same value indented,
//! empty results `[]`; `pbsfs namespaces` as a tree and a list; the note on stderr when
//! namespaces not listed hold snapshots. The catalog, find and diff fields themselves
//! are proven in `catalog.rs`, `catalog/find.rs` and `diff.rs`; here: their forms.

use std::path::PathBuf;

use pbsfs::store::format::names::BackupType;
use pbsfs::Datastore;
use serde_json::{json, Value};

use crate::common::*;
use crate::mount_util::{make_snapshot, SnapSpec, T1, T2};

const T1S: &str = "2024-05-02T08:11:33Z";
const T2S: &str = "2024-05-03T08:11:33Z";

/// Run a listing in both JSON forms; require that `json` is one line, `json-pretty`
/// the same value as serde_json indents it, and stderr the same; returns the value and
/// stderr.
#[track_caller]
fn both_forms(args: &[&str]) -> (Value, String) {
    let run = |format: &str| {
        let mut a = args.to_vec();
        a.extend(["--output-format", format]);
        let out = pbsfs(&a);
        (ok(&out), stderr(&out))
    };
    let ((compact, err), (pretty, err2)) = (run("json"), run("json-pretty"));
    assert_eq!(compact.lines().count(), 1, "json is one line: {compact}");
    let v: Value = serde_json::from_str(&compact).unwrap();
    assert_eq!(pretty, serde_json::to_string_pretty(&v).unwrap() + "\n");
    assert_eq!(err, err2);
    (v, err)
}

/// A store: the root has vm/100 (T1 with notes, protected; T2), the group's notes;
/// `a` has host/web (T1), `a/b` ct/200 (T1, T2), `c` nothing.
fn namespaced_store(tmp: &TempDir) -> PathBuf {
    let store = tmp.join("store");
    let ds = Datastore::create(&store, false).unwrap();
    let mut s1 = SnapSpec::vm("100", T1);
    s1.images = vec![("drive-scsi0.img", pseudo_random(10_000, 1), 4096)];
    s1.notes = Some("first line\nsecond");
    make_snapshot(&ds, &s1);
    let mut s2 = SnapSpec::vm("100", T2);
    s2.images = vec![("drive-scsi0.img", pseudo_random(20_000, 2), 4096)];
    s2.blobs = vec![("qemu-server.conf", b"memory: 512\n".to_vec())];
    make_snapshot(&ds, &s2);
    let mut h = SnapSpec::vm("web", T1);
    (h.ns, h.ty) = ("a", BackupType::Host);
    make_snapshot(&ds, &h);
    for t in [T1, T2] {
        let mut c = SnapSpec::vm("200", t);
        (c.ns, c.ty) = ("a/b", BackupType::Ct);
        make_snapshot(&ds, &c);
    }
    std::fs::create_dir_all(store.join("ns/c")).unwrap();
    let st = s(&store);
    ok(&pbsfs(&["protected", st, &format!("vm/100/{T1S}"), "on"]));
    ok(&pbsfs(&[
        "notes",
        st,
        "vm/100",
        "--set",
        "group notes\nmore",
    ]));
    store
}

#[test]
fn snapshots_and_groups_carry_pbs_fields_with_the_stores_values() {
    let tmp = TempDir::new("out-list");
    let store = namespaced_store(&tmp);
    let st = s(&store);
    let (v, _) = both_forms(&["snapshots", st]);
    let file =
        |name: &str, size: u64| json!({"filename": name, "crypt-mode": "none", "size": size});
    assert_eq!(
        v,
        json!([
            {"backup-type": "vm", "backup-id": "100", "backup-time": T1, "owner": "root@pam",
             "protected": true, "size": 10_000, "comment": "first line",
             "files": [file("drive-scsi0.img.fidx", 10_000)]},
            {"backup-type": "vm", "backup-id": "100", "backup-time": T2, "owner": "root@pam",
             "protected": false, "size": 20_000 + v[1]["files"][1]["size"].as_u64().unwrap(),
             "files": [file("drive-scsi0.img.fidx", 20_000),
                       file("qemu-server.conf.blob", v[1]["files"][1]["size"].as_u64().unwrap())]},
        ])
    );
    // Outside the root each snapshot names its namespace.
    let (v, err) = both_forms(&["snapshots", st, "--ns", "a/b"]);
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(
        (&v[0]["ns"], &v[1]["backup-time"]),
        (&json!("a/b"), &json!(T2))
    );
    assert_eq!(err, "", "with --ns there is no note");

    let (v, _) = both_forms(&["groups", st]);
    assert_eq!(
        v,
        json!([{"backup-type": "vm", "backup-id": "100", "backup-count": 2, "last-backup": T2,
                "owner": "root@pam", "comment": "group notes",
                "files": ["drive-scsi0.img.fidx", "qemu-server.conf.blob"]}])
    );
    // Empty results are `[]`, in both forms.
    for cmd in ["snapshots", "groups"] {
        let (v, _) = both_forms(&[cmd, st, "--ns", "c"]);
        assert_eq!(v, json!([]), "{cmd}");
        let out = ok(&pbsfs(&[cmd, st, "--ns", "c", "--output-format", "json"]));
        assert_eq!(out, "[]\n");
    }
    // A running backup (no manifest yet), with --all: its files by name, as PBS lists it.
    let running = store.join("vm/100/2024-05-04T08:11:33Z");
    std::fs::create_dir(&running).unwrap();
    std::fs::write(running.join("drive-scsi0.img.fidx"), b"").unwrap();
    let (v, _) = both_forms(&["snapshots", st, "--all"]);
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(
        v[2],
        json!({"backup-type": "vm", "backup-id": "100", "backup-time": T2 + 86_400,
               "owner": "root@pam", "protected": false, "unfinished": true,
               "files": [{"filename": "drive-scsi0.img.fidx"}]})
    );
}

#[test]
fn namespaces_are_a_tree_in_text_and_a_flat_list_in_json() {
    let tmp = TempDir::new("out-ns");
    let store = namespaced_store(&tmp);
    let st = s(&store);
    // A running backup (no manifest yet) is not counted, as `snapshots` does not list it.
    std::fs::create_dir(store.join(format!("ns/a/host/web/{T2S}"))).unwrap();
    // A namespace folder that is a symlink (planted, as in hostile.rs) is none.
    std::os::unix::fs::symlink(store.join("ns/a"), store.join("ns/evil")).unwrap();
    assert_eq!(
        ok(&pbsfs(&["namespaces", st])),
        "/      1 group, 2 snapshots\n\
         \x20 a    1 group, 1 snapshot\n\
         \x20   b  1 group, 2 snapshots\n\
         \x20 c    0 groups, 0 snapshots\n"
    );
    let row = |ns: &str, depth: usize, groups: usize, snaps: usize| json!({"ns": ns, "depth": depth, "group-count": groups, "snapshot-count": snaps});
    let (v, _) = both_forms(&["namespaces", st]);
    assert_eq!(
        v,
        json!([
            row("", 0, 1, 2),
            row("a", 1, 1, 1),
            row("a/b", 2, 1, 2),
            row("c", 1, 0, 0)
        ])
    );
    // --ns: that namespace and those below; --max-depth as PBS's (0: --ns alone).
    let (v, _) = both_forms(&["namespaces", st, "--ns", "a"]);
    assert_eq!(v, json!([row("a", 1, 1, 1), row("a/b", 2, 1, 2)]));
    assert_eq!(
        ok(&pbsfs(&["namespaces", st, "--ns", "a"])),
        "a    1 group, 1 snapshot\n  b  1 group, 2 snapshots\n"
    );
    let (v, _) = both_forms(&["namespaces", st, "--max-depth", "1"]);
    assert_eq!(v.as_array().unwrap().len(), 3, "a/b is 2 levels down: {v}");
    let (v, _) = both_forms(&["namespaces", st, "--ns", "a", "--max-depth", "0"]);
    assert_eq!(v, json!([row("a", 1, 1, 1)]));

    // Errors name what they are about.
    let err = fails_with(&pbsfs(&["namespaces", st, "--ns", "a/zz"]), 2);
    assert!(
        err.contains("namespace 'a/zz'") && err.contains("not exist"),
        "{err}"
    );
    let err = fails_with(&pbsfs(&["namespaces", st, "--ns", "evil"]), 2);
    assert!(err.contains("namespace 'evil'"), "{err}");
    let err = fails_with(&pbsfs(&["namespaces", st, "--ns", "a/../b"]), 2);
    assert!(err.contains("'..'") && err.contains("namespace"), "{err}");

    // A new store: the root alone.
    let empty = TempDir::new("out-ns-empty");
    let es = sparse_store(&empty);
    assert_eq!(
        ok(&pbsfs(&["namespaces", s(&es)])),
        "/  0 groups, 0 snapshots\n"
    );
    let (v, _) = both_forms(&["namespaces", s(&es)]);
    assert_eq!(v, json!([row("", 0, 0, 0)]));
}

/// The note `snapshots` and `groups` print without --ns, or "" when none.
fn note_of(args: &[&str]) -> String {
    let out = pbsfs(args);
    let text = ok(&out);
    assert!(
        !text.contains("pbsfs: note"),
        "the note is never on stdout: {text}"
    );
    stderr(&out)
}

#[test]
fn without_ns_a_note_says_which_other_namespaces_hold_snapshots() {
    let tmp = TempDir::new("out-note");
    let store = namespaced_store(&tmp);
    let st = s(&store);
    let want = format!(
        "pbsfs: note: 3 snapshots in 2 other namespaces (a, a/b) not shown; see \
         `pbsfs namespaces {st}`, or pass --ns NS\n"
    );
    for cmd in ["snapshots", "groups"] {
        for format in ["text", "json", "json-pretty"] {
            assert_eq!(note_of(&[cmd, st, "--output-format", format]), want);
        }
        // Any --ns, the root's included, is a choice: no note.
        assert_eq!(note_of(&[cmd, st, "--ns", ""]), "");
        assert_eq!(note_of(&[cmd, st, "--ns", "a"]), "");
    }
    // A group the root has, named: no note (the question was that group).
    assert_eq!(note_of(&["snapshots", st, "vm/100"]), "");
    // A group only another namespace has: the note comes before the error.
    let err = fails_with(&pbsfs(&["snapshots", st, "ct/200"]), 2);
    assert!(
        err.starts_with("pbsfs: note: 3 snapshots") && err.contains("error: group ct/200"),
        "{err}"
    );
    // --all counts running backups too.
    std::fs::create_dir(store.join(format!("ns/a/host/web/{T2S}"))).unwrap();
    let all = note_of(&["snapshots", st, "--all"]);
    assert!(all.contains("4 snapshots in 2 other namespaces"), "{all}");

    // Only the root holds snapshots: no note.
    let one = TempDir::new("out-note-root");
    let rs = sparse_store(&one);
    ok(&backup_image(&rs, &one, "vm/1", b"abc", T1S));
    std::fs::create_dir_all(rs.join("ns/empty")).unwrap();
    assert_eq!(note_of(&["snapshots", s(&rs)]), "");
    assert_eq!(note_of(&["groups", s(&rs)]), "");

    // An empty root, what a newcomer to a PBS store with namespaces sees first; more
    // than five namespaces are summed up.
    let fresh = TempDir::new("out-note-empty");
    let fs_ = fresh.join("store");
    let ds2 = Datastore::create(&fs_, false).unwrap();
    for ns in ["n1", "n2", "n3", "n4", "n5", "n6", "n7"] {
        let mut v = SnapSpec::vm("1", T1);
        v.ns = ns;
        make_snapshot(&ds2, &v);
    }
    let want = format!(
        "pbsfs: note: the root namespace has no snapshots, but 7 other namespaces hold 7 \
         snapshots (n1, n2, n3, n4, n5, and 2 more); see `pbsfs namespaces {}`, or pass \
         --ns NS\n",
        s(&fs_)
    );
    assert_eq!(note_of(&["snapshots", s(&fs_)]), want);
    assert_eq!(note_of(&["groups", s(&fs_)]), want);
}

#[test]
fn notes_json_is_pbs_object_and_names_what_it_belongs_to() {
    let tmp = TempDir::new("out-notes");
    let store = namespaced_store(&tmp);
    let st = s(&store);
    let snap = format!("vm/100/{T1S}");
    let (v, _) = both_forms(&["notes", st, &snap]);
    assert_eq!(
        v,
        json!({"notes": "first line\nsecond", "backup-type": "vm", "backup-id": "100",
               "backup-time": T1})
    );
    let (v, _) = both_forms(&["notes", st, "vm/100/latest"]);
    assert_eq!(v["notes"], "", "no notes: an empty string, as PBS");
    assert_eq!(v["backup-time"], T2);
    let (v, _) = both_forms(&["notes", st, "vm/100"]);
    assert_eq!(
        v,
        json!({"notes": "group notes\nmore", "backup-type": "vm", "backup-id": "100"})
    );
    let (v, _) = both_forms(&["notes", st, "ct/200", "--ns", "a/b"]);
    assert_eq!(v["ns"], "a/b");

    // --set: text prints nothing, JSON the notes as stored afterwards.
    let set = |fmt: &str, notes: &str| {
        ok(&pbsfs(&[
            "notes",
            st,
            "host/web/latest",
            "--ns",
            "a",
            "--set",
            notes,
            "--output-format",
            fmt,
        ]))
    };
    assert_eq!(set("text", "one"), "");
    let v: Value = serde_json::from_str(&set("json", "two\n")).unwrap();
    assert_eq!(
        v,
        json!({"notes": "two\n", "backup-type": "host", "backup-id": "web",
               "backup-time": T1, "ns": "a"})
    );
    assert_eq!(
        ok(&pbsfs(&["notes", st, "host/web/latest", "--ns", "a"])),
        "two\n"
    );

    // Group notes PBS never wrote (not UTF-8): text byte-exact, JSON with U+FFFD.
    std::fs::write(store.join("vm/100/notes"), b"bad \xff byte").unwrap();
    let out = pbsfs(&["notes", st, "vm/100"]);
    assert_eq!(ok_bytes(out), b"bad \xff byte");
    let (v, _) = both_forms(&["notes", st, "vm/100"]);
    assert_eq!(v["notes"], "bad \u{fffd} byte");
}

/// A pxar tree of three files, backed up into namespace `a` as host/px at T1, then
/// with `etc/new` added at T2.
fn pxar_store(tmp: &TempDir) -> PathBuf {
    let store = sparse_store(tmp);
    let src = tmp.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hostname"), b"alpha\n").unwrap();
    std::fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
    std::fs::write(src.join("readme"), b"hello\n").unwrap();
    let arg = format!("root.pxar:{}", s(&src));
    let backup = |t: &str| {
        ok(&pbsfs(&[
            "backup",
            s(&store),
            "host/px",
            &arg,
            "--ns",
            "a",
            "--create-ns",
            "--backup-time",
            t,
        ]))
    };
    backup(T1S);
    std::fs::write(src.join("etc/new"), b"added\n").unwrap();
    backup(T2S);
    store
}

/// A streamed list in both forms: `json` one object per line between `[` and `]`,
/// `json-pretty` exactly serde_json's indentation of the same list; returns it and the
/// exit code.
#[track_caller]
fn streamed(args: &[&str], code: i32) -> Vec<Value> {
    let run = |format: &str| {
        let mut a = args.to_vec();
        a.extend(["--output-format", format]);
        let out = pbsfs(&a);
        exits(&out, code);
        stdout(&out)
    };
    let (compact, pretty) = (run("json"), run("json-pretty"));
    let v: Vec<Value> = serde_json::from_str(&compact).unwrap();
    assert_eq!(pretty, serde_json::to_string_pretty(&v).unwrap() + "\n");
    if v.is_empty() {
        assert_eq!(compact, "[]\n");
        return v;
    }
    let lines: Vec<&str> = compact.lines().collect();
    assert_eq!(lines.len(), v.len() + 2, "{compact}");
    assert_eq!((lines[0], lines[v.len() + 1]), ("[", "]"));
    for (line, want) in lines[1..=v.len()].iter().zip(&v) {
        let one: Value = serde_json::from_str(line.strip_suffix(',').unwrap_or(line)).unwrap();
        assert_eq!(&one, want);
    }
    v
}

#[test]
fn streamed_lists_are_one_object_per_line_or_indented() {
    let tmp = TempDir::new("out-stream");
    let store = pxar_store(&tmp);
    let st = s(&store);
    let (a, b) = (format!("host/px/{T1S}"), format!("host/px/{T2S}"));
    let v = streamed(&["catalog", st, &a, "--ns", "a"], 0);
    let paths: Vec<&str> = v.iter().map(|e| e["path"].as_str().unwrap()).collect();
    let p = |x: &str| format!("/root.pxar.didx{x}");
    assert_eq!(
        paths,
        [
            p(""),
            p("/etc"),
            p("/etc/hostname"),
            p("/etc/hosts"),
            p("/readme")
        ]
    );
    assert_eq!((&v[2]["type"], &v[2]["size"]), (&json!("f"), &json!(6)));

    let v = streamed(&["find", st, "host*", "--ns", "a"], 0);
    assert_eq!(v.len(), 4, "hostname and hosts in both snapshots: {v:?}");
    assert_eq!(
        (&v[3]["snapshot"], &v[3]["ns"], &v[3]["path"]),
        (&json!(b), &json!("a"), &json!("/etc/hosts"))
    );
    assert!(streamed(&["find", st, "nothing*", "--ns", "a"], 1).is_empty());

    let v = streamed(&["diff", st, &a, &b, "--ns", "a"], 0);
    assert_eq!(
        v,
        [json!({"path": "root.pxar/etc/new", "change": "added", "what": []})]
    );
    assert!(streamed(&["diff", st, &a, &a, "--ns", "a"], 0).is_empty());
}

#[test]
fn an_unknown_output_format_is_refused_by_the_parser() {
    let tmp = TempDir::new("out-bad");
    let store = sparse_store(&tmp);
    let st = s(&store);
    let snap = format!("vm/1/{T1S}");
    let commands: [&[&str]; 7] = [
        &["snapshots", st],
        &["groups", st],
        &["namespaces", st],
        &["notes", st, "vm/1"],
        &["catalog", st, &snap],
        &["find", st, "x"],
        &["diff", st, &snap, &snap],
    ];
    for args in commands {
        let mut a = args.to_vec();
        a.extend(["--output-format", "yaml"]);
        let err = fails_with(&pbsfs(&a), 2);
        assert!(
            err.contains("invalid value 'yaml'") && err.contains("text, json, json-pretty"),
            "{args:?}: {err}"
        );
    }
}
