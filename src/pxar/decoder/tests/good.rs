//! The decoder on valid archives: every entry kind and attribute, v1 and v2, PRELUDE,
//! split payload references (both goodbye sizes), ENTRY_V1, path lookups, hash
//! collisions, and lookups that read O(log n) of a large directory.

use super::*;

fn get_e(ar: &Archive<Buf>, path: &str) -> Entry {
    ar.lookup_path(path.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("{path} not found"))
}

fn read_all(ar: &Archive<Buf>, e: &Entry) -> Vec<u8> {
    let c = ar.content(e).unwrap();
    let mut out = vec![0u8; c.len() as usize + 10];
    // Two pieces, the second past the end: a short count at the end only.
    let half = (c.len() / 2) as usize;
    assert_eq!(ar.read_content(&c, 0, &mut out[..half]).unwrap(), half);
    let rest = ar.read_content(&c, half as u64, &mut out[half..]).unwrap();
    assert_eq!(half + rest, c.len() as usize);
    out.truncate(c.len() as usize);
    out
}

/// Everything `sample()` holds, checked through `ar`.
fn check_sample(b: &Built, ar: &Archive<Buf>, split: bool) {
    let root = ar.root().unwrap();
    assert_eq!(root.offset, b.pos("").entry);
    assert_eq!(root.stat.mode, S_IFDIR | 0o755);
    assert_eq!(root.xattrs, vec![(b"user.root".to_vec(), b"1".to_vec())]);
    assert_eq!(root.dir().unwrap().goodbye_offset(), b.pos("").goodbye);
    let names: Vec<Vec<u8>> = ar
        .list(&root)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let want = [
        "blk", "dev", "dir", "fifo", "file", "link", "old", "sock", "sym",
    ];
    assert_eq!(names, want.map(|s| s.as_bytes().to_vec()));
    assert_eq!(root.dir().unwrap().child_count(), 9);

    let blk = get_e(ar, "blk");
    assert_eq!(blk.kind, EntryKind::Device { major: 8, minor: 0 });
    assert_eq!(blk.stat.file_type(), S_IFBLK);
    let dev = get_e(ar, "/dev");
    assert_eq!(dev.kind, EntryKind::Device { major: 4, minor: 1 });
    assert_eq!(
        (dev.stat.file_type(), dev.stat.permissions()),
        (S_IFCHR, 0o620)
    );
    assert_eq!(get_e(ar, "fifo").kind, EntryKind::Fifo);
    assert_eq!(get_e(ar, "sock").kind, EntryKind::Socket);
    assert_eq!(
        get_e(ar, "sym").kind,
        EntryKind::Symlink {
            target: b"file".to_vec()
        }
    );

    let d = get_e(ar, "dir");
    assert_eq!(d.offset, b.pos("/dir").filename);
    assert_eq!(d.stat.permissions(), 0o2775);
    assert_eq!(d.acl, sample_acl());
    assert_eq!(ar.list(&d).unwrap().len(), 2);
    let empty = get_e(ar, "dir/empty");
    assert!(ar.list(&empty).unwrap().is_empty());
    assert_eq!(empty.dir().unwrap().child_count(), 0);
    assert_eq!(read_all(ar, &get_e(ar, "dir/f")), b"hello");

    let f = get_e(ar, "file");
    assert_eq!(f.offset, b.pos("/file").filename);
    assert_eq!(f.stat, stat(S_IFREG | 0o4755));
    assert_eq!(f.xattrs[1], (b"user.a".to_vec(), b"v\0with nul".to_vec()));
    assert_eq!(f.xattrs[0], (b"trusted.b".to_vec(), vec![]));
    assert_eq!(f.fcaps.as_deref(), Some(&[1u8, 0, 0, 2, 0x20, 0, 0, 0][..]));
    assert_eq!(f.quota_projid, Some(42));
    let EntryKind::File { size, payload } = &f.kind else {
        panic!("{f:?}")
    };
    assert_eq!((*size, payload.is_ref()), (5000, split));
    assert_eq!(read_all(ar, &f), data(5000, 7));
    let mut tail = [0u8; 100];
    assert_eq!(
        ar.read(&f, 4990, &mut tail).unwrap(),
        10,
        "short only at the end"
    );
    assert_eq!(ar.read(&f, 5000, &mut tail).unwrap(), 0);

    let link = get_e(ar, "link");
    assert_eq!(link.stat, Stat::default(), "a hardlink has no ENTRY");
    let EntryKind::Hardlink {
        target_offset,
        target_path,
    } = &link.kind
    else {
        panic!()
    };
    assert_eq!(
        (*target_offset, target_path.as_slice()),
        (f.offset, &b"target/path"[..])
    );
    assert_eq!(ar.hardlink_target(&link).unwrap(), f);
    assert_eq!(
        read_all(ar, &link),
        data(5000, 7),
        "a hardlink reads as its target"
    );

    let old = get_e(ar, "old");
    assert_eq!(
        (old.stat.mtime_secs, old.stat.mtime_nanos),
        (5, 999_999_999)
    );
    assert_eq!(read_all(ar, &old), b"");
    assert_eq!(walk(ar).unwrap(), 12);
}

fn sample_acl() -> Acl {
    let N { attrs, .. } = match sample().body {
        Body::Dir(c) => c.into_iter().find(|n| n.name == b"dir").unwrap(),
        _ => unreachable!(),
    };
    attrs.acl
}

#[test]
fn every_kind_and_attribute_of_a_v1_stream() {
    let b = build(&sample(), Opts::default());
    let ar = b.open().unwrap();
    assert_eq!((ar.version(), ar.prelude()), (1, None));
    assert_eq!(ar.what(), WHAT);
    assert_eq!(b.pos("").entry, 0);
    check_sample(&b, &ar, false);
}

#[test]
fn v2_split_archives_with_and_without_prelude_and_both_goodbye_sizes() {
    for (prelude, in_size) in [
        (None, false),
        (Some(b"{\"exclude-patterns\":\"*.o\"}".to_vec()), true),
        (Some(vec![]), false),
    ] {
        let opts = Opts {
            v2: true,
            split: true,
            prelude: prelude.clone(),
            payload_in_size: in_size,
            ..Opts::default()
        };
        let b = build(&sample(), opts);
        let ar = b.open().unwrap();
        assert_eq!((ar.version(), ar.prelude()), (2, prelude.as_deref()));
        assert_eq!(
            b.pos("").entry,
            24 + prelude.as_ref().map_or(0, |p| 16 + p.len() as u64)
        );
        check_sample(&b, &ar, true);
        // The first payload sits right after the start marker.
        let EntryKind::File { payload, .. } = get_e(&ar, "dir/f").kind else {
            panic!()
        };
        assert_eq!(payload.offset(), 16);
    }
}

#[test]
fn v2_with_inline_payloads_entry_v1_and_a_root_tail_to_its_entry_are_accepted() {
    for opts in [
        Opts {
            v2: true,
            ..Opts::default()
        },
        Opts {
            entry_v1: true,
            ..Opts::default()
        },
        Opts {
            v2: true,
            entry_v1: true,
            split: true,
            ..Opts::default()
        },
        Opts {
            v2: true,
            root_tail_to_entry: true,
            ..Opts::default()
        },
        Opts {
            root_tail_to_entry: true,
            ..Opts::default()
        },
    ] {
        let b = build(&sample(), opts);
        check_sample(&b, &b.open().unwrap(), b.payload.is_some());
    }
}

#[test]
fn mtimes_before_1970_keep_their_nanoseconds() {
    let mut f = file("f", b"x");
    (f.stat.mtime_secs, f.stat.mtime_nanos) = (-86_400, 1);
    let b = build(&dir("", vec![f]), Opts::default());
    let e = get_e(&b.open().unwrap(), "f");
    assert_eq!((e.stat.mtime_secs, e.stat.mtime_nanos), (-86_400, 1));
}

#[test]
fn paths_resolve_components_and_refuse_dot_dot() {
    let b = build(&sample(), Opts::default());
    let ar = b.open().unwrap();
    assert_eq!(ar.lookup_path(b"").unwrap(), Some(ar.root().unwrap()));
    assert_eq!(
        ar.lookup_path(b"/./dir//f/").unwrap().unwrap().offset,
        b.pos("/dir/f").filename
    );
    assert_eq!(ar.lookup_path(b"dir/missing").unwrap(), None);
    assert_eq!(ar.lookup_path(b"file/x").unwrap(), None, "through a file");
    let e = ar.lookup_path(b"dir/../file").unwrap_err();
    assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
    let root = ar.root().unwrap();
    for name in [&b""[..], b".", b"..", b"a/b"] {
        assert_eq!(ar.lookup(&root, name).unwrap(), None);
    }
    let f = get_e(&ar, "file");
    assert!(matches!(
        ar.list(&f).unwrap_err().kind(),
        Error::NotADirectory { .. }
    ));
    assert!(matches!(
        ar.lookup(&f, b"x").unwrap_err().kind(),
        Error::NotADirectory { .. }
    ));
    assert!(matches!(
        ar.content(&root).unwrap_err().kind(),
        Error::IsADirectory { .. }
    ));
    assert!(matches!(
        ar.hardlink_target(&f).unwrap_err().kind(),
        Error::InvalidInput { .. }
    ));
    // Decoding again from offset and end: the root, and refusals of pairs naming nothing.
    assert_eq!(ar.entry_at(root.offset, root.end()).unwrap(), root);
    let d = get_e(&ar, "dir");
    assert_eq!(ar.entry_at(d.offset, d.end()).unwrap(), d);
    for (off, end) in [
        (d.offset, d.end() - 1),
        (f.offset, f.end() + 1),
        (f.offset, f.offset),
        (f.offset, u64::MAX),
    ] {
        let e = ar.entry_at(off, end).unwrap_err();
        assert!(
            matches!(e.kind(), Error::InvalidInput { .. } | Error::Corrupt { .. }),
            "{e}"
        );
    }
}

/// A hash with many collisions: the first byte of the name.
fn first_byte(name: &[u8]) -> u64 {
    name.first().copied().unwrap_or(0) as u64
}

#[test]
fn colliding_hashes_are_searched_in_both_subtrees() {
    // 45 names over 3 hash values: equal hashes straddle subtrees at every level.
    let mut names: Vec<String> = Vec::new();
    for p in ['a', 'b', 'c'] {
        for i in 0..15 {
            names.push(format!("{p}{i:02}"));
        }
    }
    let children = names.iter().map(|n| file(n, n.as_bytes())).collect();
    let b = build(
        &dir("", children),
        Opts {
            hasher: first_byte,
            ..Opts::default()
        },
    );
    let ar = b.open_with(first_byte).unwrap();
    let root = ar.root().unwrap();
    for n in &names {
        let e = ar
            .lookup(&root, n.as_bytes())
            .unwrap()
            .unwrap_or_else(|| panic!("{n}"));
        assert_eq!(e.offset, b.pos(&format!("/{n}")).filename);
    }
    for missing in ["a15", "b", "c99", "d00"] {
        assert_eq!(
            ar.lookup(&root, missing.as_bytes()).unwrap(),
            None,
            "{missing}"
        );
    }
    assert_eq!(walk(&ar).unwrap(), 46);
}

#[test]
fn items_with_equal_hash_values_are_walked_by_name() {
    // The real hash, then every item's hash set to that of "c": a lookup of "c" meets
    // only equal hashes and must compare names across the whole tree.
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let b = build(
        &dir("", names.iter().map(|n| file(n, b"x")).collect()),
        Opts::default(),
    );
    let mut meta = b.meta.clone();
    let gb = b.pos("").goodbye;
    for i in 0..names.len() as u64 {
        put(&mut meta, gb + 16 + 24 * i, hash(b"c"));
    }
    let ar = Archive::open(Buf::new(meta), None, WHAT).unwrap();
    let root = ar.root().unwrap();
    let c = ar.lookup(&root, b"c").unwrap().unwrap();
    assert_eq!(c.offset, b.pos("/c").filename);
    assert_eq!(
        ar.lookup(&root, b"a").unwrap(),
        None,
        "its hash is no longer in the table"
    );
    // The table no longer matches its names: listing refuses it.
    assert_corrupt(ar.list(&root), None);
}

#[test]
fn a_lookup_reads_log_n_of_a_large_directory_and_a_list_crosses_batches() {
    let names: Vec<String> = (0..3000).map(|i| format!("n{i:05}")).collect();
    let children = names.iter().map(|n| special(n, S_IFIFO | 0o644)).collect();
    let b = build(&dir("", children), Opts::default());
    assert!(b.meta.len() > 300_000);
    let ar = b.open().unwrap();
    let root = ar.root().unwrap();
    for n in names.iter().step_by(97) {
        let before = ar.meta.counts();
        let e = ar.lookup(&root, n.as_bytes()).unwrap().unwrap();
        assert_eq!(e.name, n.as_bytes());
        let (reads, bytes) = ar.meta.counts();
        let (reads, bytes) = (reads - before.0, bytes - before.1);
        // log2(3000) < 12 items of 24 bytes, then one window for the entry.
        assert!(reads <= 14, "{n}: {reads} reads");
        assert!(bytes <= 12 * 24 + 4096, "{n}: {bytes} bytes");
    }
    assert_eq!(ar.lookup(&root, b"n99999").unwrap(), None);
    let all = ar.list(&root).unwrap();
    assert_eq!(all.len(), 3000);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    assert!(all.iter().zip(&names).all(|(e, n)| e.name == n.as_bytes()));
}
