//! The decoder on bad input: every truncation and byte flip of small archives, and each
//! broken rule on its own, refused as `Corrupt` naming the archive and the offset, with
//! no panic, no hang and no allocation sized by the input.

use super::*;

fn split() -> Opts {
    Opts {
        v2: true,
        split: true,
        ..Opts::default()
    }
}

fn open_meta(meta: Vec<u8>, payload: Option<Vec<u8>>) -> Result<Archive<Buf>> {
    Archive::open(Buf::new(meta), payload.map(Buf::new), WHAT)
}

fn walk_meta(meta: Vec<u8>, payload: Option<Vec<u8>>) -> Result<usize> {
    walk(&open_meta(meta, payload)?)
}

/// `b.meta` with `f` applied, opened.
fn patched(b: &Built, f: impl FnOnce(&mut Vec<u8>)) -> Result<Archive<Buf>> {
    let mut meta = b.meta.clone();
    f(&mut meta);
    open_meta(meta, b.payload.clone())
}

fn lookup(ar: &Result<Archive<Buf>>, path: &str) -> Result<Option<Entry>> {
    ar.as_ref()
        .map_err(Clone::clone)?
        .lookup_path(path.as_bytes())
}

#[test]
fn every_truncation_is_refused_naming_an_offset() {
    for opts in [Opts::default(), split()] {
        let b = build(&sample(), opts);
        for cut in 0..b.meta.len() {
            let r = walk_meta(b.meta[..cut].to_vec(), b.payload.clone());
            assert_corrupt(r, None);
        }
        if let Some(p) = &b.payload {
            // Everything but the tail marker is referenced.
            for cut in 0..p.len() - 16 {
                let r = walk_meta(b.meta.clone(), Some(p[..cut].to_vec()));
                assert!(
                    r.as_ref()
                        .is_err_and(|e| e.to_string().contains("payload stream")),
                    "{r:?}"
                );
                assert_corrupt(r, None);
            }
        }
    }
}

#[test]
fn flipped_bytes_never_panic_and_fail_only_as_corrupt() {
    for opts in [Opts::default(), split()] {
        let b = build(&sample(), opts);
        // Structure: every item header and every goodbye table must be checked whole.
        let mut structure: Vec<(u64, u64)> = b.headers.iter().map(|h| (*h, h + 16)).collect();
        for p in b.at.values().filter(|p| p.goodbye > 0) {
            structure.push((p.goodbye, p.goodbye + get(&b.meta, p.goodbye + 8)));
        }
        let mut missed = Vec::new();
        // Not the 5000 content bytes of /file (inline in v1): flips there are content.
        let data = b.pos("/file").content + 16;
        let data = if b.payload.is_some() {
            0..0
        } else {
            data..data + 5000
        };
        for i in (0..b.meta.len() as u64).filter(|i| !data.contains(i)) {
            for x in [0xff, 0x01, 0x80] {
                let mut meta = b.meta.clone();
                meta[i as usize] ^= x;
                match walk_meta(meta, b.payload.clone()) {
                    Err(e) => {
                        assert!(matches!(e.kind(), Error::Corrupt { .. }), "byte {i}: {e}");
                        assert!(e.to_string().contains(" at offset "), "{e}");
                    }
                    Ok(_) if structure.iter().any(|(s, e)| (*s..*e).contains(&i)) => {
                        missed.push((i, x))
                    }
                    Ok(_) => {}
                }
            }
        }
        assert!(
            missed.is_empty(),
            "flips of structure not noticed: {missed:?}"
        );
    }
}

#[test]
fn items_running_past_their_parent_are_refused() {
    let b = build(&sample(), Opts::default());
    let xattr = b.pos("/file").attrs;
    let ar = patched(&b, |m| put(m, xattr + 8, u64::MAX - 4));
    assert_corrupt(lookup(&ar, "file"), Some(xattr));
    let payload = b.pos("/dir/f").content;
    let ar = patched(&b, |m| put(m, payload + 8, 1 << 40));
    assert_corrupt(lookup(&ar, "dir/f"), Some(payload));
    // A directory whose goodbye size runs past its parent.
    let item = b.item_of("", "/dir");
    let ar = patched(&b, |m| put(m, item + 16, 1 << 50));
    assert_corrupt(lookup(&ar, "dir"), Some(b.pos("/dir").filename));
    // A size smaller than a header.
    let ar = patched(&b, |m| put(m, xattr + 8, 3));
    assert_corrupt(lookup(&ar, "file"), Some(xattr));
}

#[test]
fn goodbye_items_pointing_outside_their_directory_are_refused() {
    let b = build(&sample(), Opts::default());
    let gb = b.pos("").goodbye;
    let item = b.item_of("", "/dir");
    for dist in [gb - b.pos("").entry, 0, gb + 100] {
        let ar = patched(&b, |m| put(m, item + 8, dist));
        assert_corrupt(
            ar.as_ref()
                .unwrap()
                .list(&ar.as_ref().unwrap().root().unwrap()),
            None,
        );
        assert_corrupt(lookup(&ar, "dir"), Some(item));
    }
    // A cycle: /dir's child "empty" pointing back at /dir itself.
    let item = b.item_of("/dir", "/dir/empty");
    let dist = b.pos("/dir").goodbye - b.pos("/dir").filename;
    let ar = patched(&b, |m| put(m, item + 8, dist));
    assert_corrupt(lookup(&ar, "dir/empty"), Some(item));
    // Into a sibling's subtree: the table no longer covers the children.
    let item = b.item_of("", "/file");
    let ar = patched(&b, |m| put(m, item + 8, gb - b.pos("/dir/f").filename));
    let ar = ar.unwrap();
    assert_corrupt(ar.list(&ar.root().unwrap()), None);
    // Two items for one child: children overlap and one is missing.
    let (a, c) = (b.item_of("", "/old"), b.item_of("", "/sym"));
    let ar = patched(&b, |m| put(m, a + 8, get(&b.meta, c + 8))).unwrap();
    assert_corrupt(ar.list(&ar.root().unwrap()), None);
}

#[test]
fn goodbye_tables_that_are_not_a_tree_or_end_without_a_valid_tail_are_refused() {
    let b = build(&sample(), Opts::default());
    let (gb, end) = (b.pos("").goodbye, b.meta.len() as u64);
    // Two items swapped: no longer ordered by hash.
    let ar = patched(&b, |m| {
        let (x, y) = ((gb + 16) as usize, (gb + 40) as usize);
        let first: Vec<u8> = m[x..x + 24].to_vec();
        m.copy_within(y..y + 24, x);
        m[y..y + 24].copy_from_slice(&first);
    })
    .unwrap();
    let msg = assert_corrupt(ar.list(&ar.root().unwrap()), None);
    assert!(msg.contains("order by hash"), "{msg}");
    // The root's tail: marker, size, offset.
    assert_corrupt(patched(&b, |m| put(m, end - 24, 7)), Some(end - 24));
    assert_corrupt(
        patched(&b, |m| put(m, end - 8, end - gb + 1)),
        Some(end - 24),
    );
    assert_corrupt(patched(&b, |m| put(m, end - 8, 1 << 60)), Some(end - 24));
    assert_corrupt(patched(&b, |m| put(m, end - 8, 16)), Some(end - 24));
    assert_corrupt(patched(&b, |m| put(m, end - 16, 1)), Some(end - 24));
    // A GOODBYE header of another size than the tail's.
    assert_corrupt(patched(&b, |m| put(m, gb + 8, end - gb + 24)), Some(gb));
    // A subdirectory's tail pointing elsewhere than its ENTRY.
    let p = b.pos("/dir");
    let dir_end = p.filename + get(&b.meta, b.item_of("", "/dir") + 16);
    let ar = patched(&b, |m| put(m, dir_end - 16, p.goodbye - p.filename));
    assert_corrupt(lookup(&ar, "dir"), Some(dir_end - 24));
    assert_eq!(
        lookup(&ar, "file").unwrap().unwrap().offset,
        b.pos("/file").filename
    );
}

#[test]
fn bad_and_unsorted_names_are_refused() {
    for bad in ["a/b", ".", "..", ""] {
        let b = build(
            &dir("", vec![file(bad, b"x"), file("z", b"y")]),
            Opts::default(),
        );
        let ar = b.open().unwrap();
        let root = ar.root().unwrap();
        let at = b.pos(&format!("/{bad}")).filename;
        assert_corrupt(ar.list(&root), Some(at));
        assert_eq!(ar.lookup(&root, bad.as_bytes()).unwrap(), None);
        assert!(ar.lookup(&root, b"z").unwrap().is_some());
    }
    let b = build(
        &dir("", vec![file("b", b"x"), file("a", b"y")]),
        Opts::default(),
    );
    let ar = b.open().unwrap();
    let msg = assert_corrupt(ar.list(&ar.root().unwrap()), Some(b.pos("/a").filename));
    assert!(msg.contains("sorted"), "{msg}");
    // A NUL inside, no closing NUL, longer than the format's cap.
    let b = build(&dir("", vec![file("ab", b"x")]), Opts::default());
    let at = b.pos("/ab").filename;
    for (i, v) in [(16, 0u8), (18, b'c')] {
        let ar = patched(&b, |m| m[(at + i) as usize] = v).unwrap();
        assert_corrupt(ar.list(&ar.root().unwrap()), Some(at));
    }
    let long = "x".repeat(4097);
    let b = build(&dir("", vec![file(&long, b"x")]), Opts::default());
    let ar = b.open().unwrap();
    let msg = assert_corrupt(
        ar.list(&ar.root().unwrap()),
        Some(b.pos(&format!("/{long}")).filename),
    );
    assert!(msg.contains("limit of 4097"), "{msg}");
}

#[test]
fn hardlinks_forward_outside_or_to_directories_and_hardlinks_are_refused() {
    let with = |link: Link| {
        build(
            &dir(
                "",
                vec![
                    dir("d", vec![]),
                    file("f", b"data"),
                    hardlink("l", link),
                    hardlink("m", Link::To("/l")),
                ],
            ),
            Opts::default(),
        )
    };
    let b = with(Link::To("/f"));
    let at = b.pos("/l").filename;
    // Zero (itself), forward (a wrapped distance), before the archive, into the root ENTRY.
    for dist in [0, u64::MAX, at + 1, at - b.pos("").entry] {
        let b = with(Link::Back(dist));
        let ar = b.open().unwrap();
        assert_corrupt(ar.lookup_path(b"l"), Some(at + 18));
    }
    let b = with(Link::To("/d"));
    let ar = b.open().unwrap();
    let l = ar.lookup_path(b"l").unwrap().unwrap();
    let msg = assert_corrupt(ar.hardlink_target(&l), Some(b.pos("/d").entry));
    assert!(
        msg.contains("directory") && msg.contains(&format!("hardlink at offset {at}")),
        "{msg}"
    );
    assert_corrupt(ar.read(&l, 0, &mut [0u8; 4]), None);
    // To a hardlink.
    let b = with(Link::To("/f"));
    let ar = b.open().unwrap();
    let m = ar.lookup_path(b"m").unwrap().unwrap();
    assert_corrupt(ar.hardlink_target(&m), Some(at));
    // Into the middle of an entry (its ENTRY, not its FILENAME).
    let b = with(Link::Back(at - b.pos("/f").entry));
    let ar = b.open().unwrap();
    let l = ar.lookup_path(b"l").unwrap().unwrap();
    assert_corrupt(ar.hardlink_target(&l), Some(b.pos("/f").entry));
}

#[test]
fn bad_payload_references_are_refused() {
    let b = build(&sample(), split());
    let p = b.payload.as_ref().unwrap();
    let (at, r) = (b.pos("/file").filename, b.pos("/file").content);
    for (field, v, why) in [
        (16, p.len() as u64, "past the payload stream"),
        (16, 8, "no PAYLOAD header"),
        (24, 4999, "4999 are referenced"),
    ] {
        let ar = patched(&b, |m| put(m, r + field, v)).unwrap();
        let f = ar.lookup_path(b"file").unwrap().unwrap();
        let msg = assert_corrupt(ar.read(&f, 0, &mut [0u8; 10]), Some(at));
        assert!(msg.contains(why), "{msg}");
        // Its neighbours stay readable.
        assert_eq!(
            ar.read(
                &ar.lookup_path(b"dir/f").unwrap().unwrap(),
                0,
                &mut [0u8; 10]
            )
            .unwrap(),
            5
        );
    }
    let ar = patched(&b, |m| put(m, r + 24, u64::MAX - 20));
    assert_corrupt(lookup(&ar, "file"), Some(r));
    // No payload stream: the caller's mistake, not damage.
    let ar = open_meta(b.meta.clone(), None).unwrap();
    let e = ar
        .read(&ar.lookup_path(b"file").unwrap().unwrap(), 0, &mut [0u8; 4])
        .unwrap_err();
    assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
    // A PAYLOAD_REF in a v1 stream.
    let b = build(
        &sample(),
        Opts {
            split: true,
            ..Opts::default()
        },
    );
    assert_corrupt(
        b.open().unwrap().lookup_path(b"file"),
        Some(b.pos("/file").content),
    );
}

#[test]
fn unknown_misplaced_repeated_or_oversized_items_are_refused() {
    let with_raw = |mode: u64, body: Body, raw: Vec<(u64, Vec<u8>)>| {
        let mut f = file("f", b"x");
        (f.stat.mode, f.body, f.attrs.raw) = (mode, body, raw);
        f.attrs.fcaps = Some(vec![1]);
        build(&dir("", vec![f, file("g", b"y")]), Opts::default())
    };
    type Raw = Vec<(u64, Vec<u8>)>;
    let cases: Vec<(u64, Body, Raw)> = vec![
        (S_IFREG | 0o644, Body::File(vec![]), vec![(0x1234, vec![1])]),
        (S_IFDIR | 0o755, Body::Dir(vec![]), vec![(0x1234, vec![])]),
        (S_IFIFO | 0o644, Body::Special, vec![(PAYLOAD, vec![])]),
        (
            S_IFLNK | 0o777,
            Body::Symlink(b"t".to_vec()),
            vec![(DEVICE, vec![0; 16])],
        ),
        (
            S_IFREG | 0o644,
            Body::File(vec![]),
            vec![(XATTR, b"user.x\0v".to_vec())],
        ),
        (S_IFREG | 0o644, Body::File(vec![]), vec![(FCAPS, vec![2])]),
        (
            S_IFREG | 0o644,
            Body::File(vec![]),
            vec![(QUOTA_PROJID, vec![0; 7])],
        ),
    ];
    for (mode, body, raw) in cases {
        let len: u64 = raw.iter().map(|(_, c)| 16 + c.len() as u64).sum();
        let b = with_raw(mode, body, raw);
        let ar = b.open().unwrap();
        assert_corrupt(ar.lookup_path(b"f"), Some(b.pos("/f").content - len));
        assert!(ar.lookup_path(b"g").unwrap().is_some());
    }
    // Caps: an XATTR over 255 + 64 KiB, a symlink target over 4096, an empty xattr name.
    let mut f = file("f", b"x");
    f.attrs.xattrs = vec![(b"user.big".to_vec(), vec![0; 64 * 1024 + 256])];
    let b = build(&dir("", vec![f]), Opts::default());
    let msg = assert_corrupt(b.open().unwrap().lookup_path(b"f"), Some(b.pos("/f").attrs));
    assert!(msg.contains("limit"), "{msg}");
    let b = build(
        &dir("", vec![symlink("s", &"t".repeat(4097))]),
        Opts::default(),
    );
    assert_corrupt(
        b.open().unwrap().lookup_path(b"s"),
        Some(b.pos("/s").content),
    );
    for (name, value) in [(&b""[..], &b"v"[..]), (&[b'x'; 256][..], &b""[..])] {
        let mut f = file("f", b"x");
        f.attrs.xattrs = vec![(name.to_vec(), value.to_vec())];
        let b = build(&dir("", vec![f]), Opts::default());
        assert_corrupt(b.open().unwrap().lookup_path(b"f"), Some(b.pos("/f").attrs));
    }
    // Attributes beyond the decoder's per-entry bound.
    let mut f = file("f", b"x");
    f.attrs.xattrs = (0..130)
        .map(|i| (format!("user.{i:03}").into_bytes(), vec![0; 65_000]))
        .collect();
    let b = build(&dir("", vec![f]), Opts::default());
    let msg = assert_corrupt(b.open().unwrap().lookup_path(b"f"), None);
    assert!(msg.contains("attributes of more than"), "{msg}");
}

#[test]
fn bad_entries_versions_and_preludes_are_refused() {
    let b = build(&sample(), Opts::default());
    let e = b.pos("/file").entry;
    // Nanoseconds out of range, no file type, an ENTRY of the wrong size.
    let ar = patched(&b, |m| {
        m[(e + 48) as usize..(e + 52) as usize].copy_from_slice(&1_000_000_000u32.to_le_bytes())
    });
    assert_corrupt(lookup(&ar, "file"), Some(e));
    let ar = patched(&b, |m| put(m, e + 16, 0o644));
    assert_corrupt(lookup(&ar, "file"), Some(e));
    let ar = patched(&b, |m| put(m, e + 8, 48));
    assert_corrupt(lookup(&ar, "file"), Some(e));
    // A regular file, a directory without their content item.
    for mode in [S_IFREG | 0o644, S_IFDIR | 0o755] {
        let f = special("f", mode);
        let b = build(&dir("", vec![f, file("g", b"")]), Opts::default());
        assert_corrupt(b.open().unwrap().lookup_path(b"f"), None);
    }
    // The root: not a directory; an item other than ENTRY.
    let b1 = build(&file("", b"x"), Opts::default());
    assert_corrupt(b1.open(), Some(0));
    assert_corrupt(patched(&b, |m| put(m, 0, FILENAME)), Some(0));
    // A PRELUDE in a v1 stream; FORMAT_VERSION other than 2.
    let mut meta = 16u64.to_le_bytes().to_vec();
    meta.splice(0..0, PRELUDE.to_le_bytes());
    meta.extend_from_slice(&b.meta);
    assert_corrupt(open_meta(meta, None), Some(0));
    let b2 = build(
        &sample(),
        Opts {
            v2: true,
            ..Opts::default()
        },
    );
    for v in [1, 3] {
        assert_corrupt(patched(&b2, |m| put(m, 16, v)), Some(0));
    }
    assert!(open_meta(Vec::new(), None).is_err());
}

#[test]
fn reader_errors_keep_their_kind_and_name_the_offset() {
    let b = build(&sample(), Opts::default());
    let ar = b.open().unwrap();
    let f = ar.lookup_path(b"file").unwrap().unwrap();
    let c = ar.content(&f).unwrap();
    let fail = b.pos("/file").content + 16 + 100;
    ar.meta
        .fail_at
        .store(fail, std::sync::atomic::Ordering::Relaxed);
    let e = ar.read_content(&c, 0, &mut [0u8; 200]).unwrap_err();
    assert!(matches!(e.kind(), Error::Io { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("{WHAT} at offset {}", fail - 100)),
        "{e}"
    );
    // Other files stay readable.
    assert_eq!(
        ar.read(
            &ar.lookup_path(b"dir/f").unwrap().unwrap(),
            0,
            &mut [0u8; 9]
        )
        .unwrap(),
        5
    );
}

#[test]
fn random_multi_byte_damage_never_panics() {
    // Deterministic: bytes and whole u64 fields (sizes, offsets) overwritten at random.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for opts in [Opts::default(), split()] {
        let b = build(&sample(), opts);
        let len = b.meta.len() as u64;
        for _ in 0..1500 {
            let mut meta = b.meta.clone();
            for _ in 0..1 + next() % 4 {
                let at = next() % (len - 8);
                match next() % 3 {
                    0 => meta[at as usize] = next() as u8,
                    1 => put(&mut meta, at, next() % (2 * len)),
                    _ => put(&mut meta, at, next()),
                }
            }
            if let Err(e) = walk_meta(meta, b.payload.clone()) {
                assert!(matches!(e.kind(), Error::Corrupt { .. }), "{e}");
            }
        }
    }
}
