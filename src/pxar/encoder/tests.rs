//! Tests of the encoder: the exact bytes of a small stream, the item order, goodbye
//! tables and tails, hardlink offsets, and the misuse it refuses.

use super::*;
use crate::pxar::format::*;

fn stat(mode: u64) -> Metadata {
    Metadata {
        stat: Stat {
            mode,
            flags: 0,
            uid: 1000,
            gid: 100,
            mtime_secs: -86_400,
            mtime_nanos: 5,
        },
        ..Default::default()
    }
}

/// Every item of a stream: (offset, htype, content).
fn items(s: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < s.len() {
        let h = Header::parse(s[at..at + 16].try_into().unwrap());
        // PAYLOAD content is inline; GOODBYE too: both are plain items.
        let end = at + h.full_size as usize;
        out.push((at as u64, h.htype, s[at + 16..end].to_vec()));
        at = end;
    }
    out
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

#[test]
fn a_root_with_one_empty_file_is_byte_exact() {
    let root = stat(S_IFDIR | 0o755);
    let file = stat(S_IFREG | 0o644);
    let mut e = Encoder::new(Vec::new(), &root).unwrap();
    e.add_file(b"a", &file, b"").unwrap();
    let s = e.finish().unwrap();

    let mut want = Vec::new();
    let hdr = |t: u64, len: u64| {
        Header {
            htype: t,
            full_size: 16 + len,
        }
        .to_bytes()
    };
    want.extend_from_slice(&hdr(ENTRY, 40));
    want.extend_from_slice(&root.stat.to_bytes());
    let fname_at = want.len() as u64;
    want.extend_from_slice(&hdr(FILENAME, 2));
    want.extend_from_slice(b"a\0");
    want.extend_from_slice(&hdr(ENTRY, 40));
    want.extend_from_slice(&file.stat.to_bytes());
    want.extend_from_slice(&hdr(PAYLOAD, 0));
    let gb = want.len() as u64;
    want.extend_from_slice(&hdr(GOODBYE, 48));
    let item = GoodbyeItem {
        hash: hash(b"a"),
        offset: gb - fname_at,
        size: gb - fname_at,
    };
    want.extend_from_slice(&item.to_bytes());
    let tail = GoodbyeItem {
        hash: GOODBYE_TAIL_MARKER,
        offset: gb,
        size: 64,
    };
    want.extend_from_slice(&tail.to_bytes());
    assert_eq!(s, want);
}

#[test]
fn attributes_come_in_the_spec_order_and_content_items_follow() {
    let root = stat(S_IFDIR | 0o755);
    let mut m = stat(S_IFDIR | 0o2775);
    m.xattrs = vec![Xattr {
        name: b"user.a".to_vec(),
        value: b"1".to_vec(),
    }];
    m.acl = Acl {
        users: vec![AclUser { uid: 7, perms: 6 }],
        groups: vec![AclGroup { gid: 8, perms: 4 }],
        group_obj: Some(5),
        default: Some(AclDefault {
            user_obj: 7,
            group_obj: 5,
            other: 0,
            mask: ACL_NO_MASK,
        }),
        default_users: vec![AclUser { uid: 9, perms: 7 }],
        default_groups: vec![AclGroup { gid: 10, perms: 1 }],
    };
    m.fcaps = Some(vec![1, 2, 3]);
    m.quota_project_id = Some(42);
    let mut e = Encoder::new(Vec::new(), &root).unwrap();
    e.create_directory(b"d", &m).unwrap();
    e.add_device(b"dev", &stat(S_IFCHR | 0o600), 1, 3).unwrap();
    e.add_fifo_or_socket(b"fifo", &stat(S_IFIFO | 0o644))
        .unwrap();
    e.add_symlink(b"link", &stat(S_IFLNK | 0o777), b"../x")
        .unwrap();
    e.add_fifo_or_socket(b"sock", &stat(S_IFSOCK | 0o755))
        .unwrap();
    e.finish_directory().unwrap();
    let s = e.finish().unwrap();
    let types: Vec<u64> = items(&s).iter().map(|i| i.1).collect();
    assert_eq!(
        types,
        [
            ENTRY,
            FILENAME,
            ENTRY,
            XATTR,
            ACL_USER,
            ACL_GROUP,
            ACL_GROUP_OBJ,
            ACL_DEFAULT,
            ACL_DEFAULT_USER,
            ACL_DEFAULT_GROUP,
            FCAPS,
            QUOTA_PROJID,
            FILENAME,
            ENTRY,
            DEVICE,
            FILENAME,
            ENTRY,
            FILENAME,
            ENTRY,
            SYMLINK,
            FILENAME,
            ENTRY,
            GOODBYE,
            GOODBYE
        ]
    );
    let it = items(&s);
    assert_eq!(it[3].2, b"user.a\x001");
    assert_eq!(it[7].2.len(), 32);
    assert_eq!(u64_at(&it[7].2, 24), ACL_NO_MASK);
    assert_eq!(it[11].2, 42u64.to_le_bytes());
    assert_eq!(it[19].2, b"../x\0");
    assert_eq!(&it[14].2[..8], &1u64.to_le_bytes());
}

#[test]
fn goodbye_tables_are_in_eytzinger_order_with_correct_offsets_and_tails() {
    let root = stat(S_IFDIR | 0o755);
    let mut e = Encoder::new(Vec::new(), &root).unwrap();
    let names: Vec<Vec<u8>> = (0..13).map(|i| format!("f{i:02}").into_bytes()).collect();
    e.create_directory(b"sub", &stat(S_IFDIR | 0o700)).unwrap();
    for n in &names {
        e.add_file(n, &stat(S_IFREG | 0o600), n).unwrap();
    }
    e.finish_directory().unwrap();
    let s = e.finish().unwrap();
    let it = items(&s);
    let gbs: Vec<&(u64, u64, Vec<u8>)> = it.iter().filter(|i| i.1 == GOODBYE).collect();
    assert_eq!(gbs.len(), 2);
    // The subdirectory's table.
    let (gb_at, _, body) = gbs[0];
    assert_eq!(body.len(), 14 * 24);
    let table: Vec<GoodbyeItem> = body.chunks(24).map(GoodbyeItem::parse).collect();
    let mut sorted: Vec<u64> = names.iter().map(|n| hash(n)).collect();
    sorted.sort_unstable();
    let want: Vec<u64> = goodbye_order(13).into_iter().map(|i| sorted[i]).collect();
    let got: Vec<u64> = table[..13].iter().map(|i| i.hash).collect();
    assert_eq!(got, want);
    for g in &table[..13] {
        let fname = gb_at - g.offset;
        let name_item = it.iter().find(|i| i.0 == fname).expect("points at an item");
        assert_eq!(name_item.1, FILENAME);
        let name = &name_item.2[..name_item.2.len() - 1];
        assert_eq!(hash(name), g.hash);
        // A file's size: FILENAME + ENTRY + PAYLOAD with its content.
        assert_eq!(g.size, (16 + 4) + (16 + 40) + (16 + 3));
    }
    let sub_entry = it.iter().find(|i| i.1 == FILENAME).unwrap().0 + 16 + 4;
    assert_eq!(table[13].hash, GOODBYE_TAIL_MARKER);
    assert_eq!(table[13].offset, gb_at - sub_entry);
    assert_eq!(table[13].size, 16 + 14 * 24);
    // The root's: one child covering the whole subdirectory, tail back to offset 0.
    let (root_gb, _, body) = gbs[1];
    let t: Vec<GoodbyeItem> = body.chunks(24).map(GoodbyeItem::parse).collect();
    assert_eq!(t[0].hash, hash(b"sub"));
    assert_eq!(t[0].offset, root_gb - 56);
    assert_eq!(t[0].size, root_gb - 56);
    assert_eq!(t[1].offset, *root_gb);
    assert_eq!(t[1].size, 16 + 2 * 24);
    assert_eq!(root_gb + 64, s.len() as u64);
}

#[test]
fn hardlinks_point_back_to_the_targets_filename_and_name_its_path() {
    let root = stat(S_IFDIR | 0o755);
    let mut e = Encoder::new(Vec::new(), &root).unwrap();
    let target = e.add_file(b"a", &stat(S_IFREG | 0o644), b"xyz").unwrap();
    e.add_hardlink(b"b", b"a", target).unwrap();
    let s = e.finish().unwrap();
    let it = items(&s);
    let b_name = it.iter().filter(|i| i.1 == FILENAME).nth(1).unwrap().0;
    let link = it.iter().find(|i| i.1 == HARDLINK).unwrap();
    assert_eq!(
        link.0,
        b_name + 16 + 2,
        "no ENTRY between FILENAME and HARDLINK"
    );
    assert_eq!(u64_at(&link.2, 0), b_name - target.0);
    assert_eq!(target.0, 56);
    assert_eq!(&link.2[8..], b"a\0");
}

#[test]
fn misuse_is_refused() {
    let root = stat(S_IFDIR | 0o755);
    assert!(Encoder::new(Vec::new(), &stat(S_IFREG | 0o644)).is_err());
    let mut e = Encoder::new(Vec::new(), &root).unwrap();
    e.add_file(b"b", &stat(S_IFREG), b"").unwrap();
    for bad in [&b"a"[..], b"b", b"", b".", b"..", b"x/y", b"x\0"] {
        let err = e.add_file(bad, &stat(S_IFREG), b"").unwrap_err();
        assert!(matches!(err.kind(), Error::InvalidInput { .. }), "{err}");
    }
    // Too much content, too little.
    let mut f = e.create_file(b"c", &stat(S_IFREG), 2).unwrap();
    assert!(f.write(b"abc").is_err());
    f.write(b"a").unwrap();
    assert!(f.finish().is_err());
    // The unfinished file broke the stream: nothing more is written.
    assert!(e.add_file(b"d", &stat(S_IFREG), b"").is_err());
    assert!(e.finish().is_err());

    let mut e = Encoder::new(Vec::new(), &root).unwrap();
    assert!(e.finish_directory().is_err());
    e.create_directory(b"d", &stat(S_IFDIR)).unwrap();
    assert!(e.add_hardlink(b"x", b"a", LinkOffset(1 << 40)).is_err());
    assert!(e.add_symlink(b"l", &stat(S_IFREG), b"t").is_err());
    assert!(e.finish().is_err(), "a directory is still open");
}

#[test]
fn a_split_archive_is_v2_with_refs_into_a_marked_payload_stream() {
    let root = stat(S_IFDIR | 0o755);
    let file = stat(S_IFREG | 0o644);
    let prelude = br#"{"exclude-patterns":"*.tmp\n"}"#;
    let mut e = Encoder::new_split(Vec::new(), Vec::new(), &root, Some(prelude)).unwrap();
    let a = e.add_file(b"a", &file, b"xyz").unwrap();
    e.add_hardlink(b"ah", b"a", a).unwrap();
    e.add_file(b"b", &file, b"").unwrap();
    e.add_symlink(b"c", &stat(S_IFLNK | 0o777), b"a").unwrap();
    let (meta, payload) = e.finish_split().unwrap();

    let m = items(&meta);
    assert_eq!(
        (m[0].0, m[0].1, &m[0].2[..]),
        (0, FORMAT_VERSION, &2u64.to_le_bytes()[..])
    );
    assert_eq!((m[1].1, &m[1].2[..]), (PRELUDE, &prelude[..]));
    assert_eq!(m[2].1, ENTRY, "the root ENTRY after the prelude");
    assert!(
        !m.iter().any(|i| i.1 == PAYLOAD),
        "no content in the metadata stream"
    );
    let refs: Vec<(u64, u64)> = m
        .iter()
        .filter(|i| i.1 == PAYLOAD_REF)
        .map(|i| (u64_at(&i.2, 0), u64_at(&i.2, 8)))
        .collect();
    assert_eq!(refs, vec![(16, 3), (16 + 16 + 3, 0)]);

    let p = items(&payload);
    let kinds: Vec<u64> = p.iter().map(|i| i.1).collect();
    assert_eq!(
        kinds,
        vec![PAYLOAD_START_MARKER, PAYLOAD, PAYLOAD, PAYLOAD_TAIL_MARKER]
    );
    assert_eq!((p[1].0, &p[1].2[..]), (16, &b"xyz"[..]));
    assert_eq!(payload.len(), 16 + 19 + 16 + 16);

    // Goodbye sizes: the metadata span plus the payload length; the root tail reaches
    // back to the stream start, before FORMAT_VERSION.
    let gb = m.iter().find(|i| i.1 == GOODBYE).unwrap();
    let n = gb.2.len() / 24 - 1;
    let gbi = |i: usize| GoodbyeItem::parse(&gb.2[i * 24..i * 24 + 24]);
    assert_eq!(n, 4);
    assert_eq!(gbi(n).offset, gb.0);
    let a_at = m.iter().find(|i| i.1 == FILENAME).unwrap().0;
    let a_item = (0..n).map(gbi).find(|it| gb.0 - it.offset == a_at).unwrap();
    let a_ref_end = m.iter().find(|i| i.1 == PAYLOAD_REF).unwrap().0 + 32;
    assert_eq!(a_item.size, a_ref_end - a_at + 3);

    // The decoder reads it back.
    let ar = crate::pxar::decoder::Archive::open(meta, Some(payload), "split").unwrap();
    assert_eq!(ar.version(), 2);
    assert_eq!(ar.prelude(), Some(&prelude[..]));
    let f = ar.lookup_path(b"a").unwrap().unwrap();
    let mut buf = [0u8; 3];
    assert_eq!(ar.read(&f, 0, &mut buf).unwrap(), 3);
    assert_eq!(&buf, b"xyz");

    // A single-stream encoder is no split archive.
    let e = Encoder::new(Vec::new(), &root).unwrap();
    let err = e.finish_split().unwrap_err();
    assert!(matches!(err.kind(), Error::InvalidInput { .. }), "{err}");
}

#[test]
fn references_into_injected_payload_go_forward_and_markers_are_taken_over() {
    let root = stat(S_IFDIR | 0o755);
    let file = stat(S_IFREG | 0o644);
    let marker = |htype| {
        Header {
            htype,
            full_size: HEADER_SIZE,
        }
        .to_bytes()
    };
    // A previous payload stream: start marker, "abc", "de", tail marker.
    let mut old = marker(PAYLOAD_START_MARKER).to_vec();
    for body in [&b"abc"[..], b"de"] {
        let h = Header {
            htype: PAYLOAD,
            full_size: HEADER_SIZE + body.len() as u64,
        };
        old.extend_from_slice(&h.to_bytes());
        old.extend_from_slice(body);
    }
    old.extend_from_slice(&marker(PAYLOAD_TAIL_MARKER));

    let mut e = Encoder::new_split(Vec::new(), Vec::new(), &root, None).unwrap();
    // Inject it whole, its start marker replacing the one just written.
    let out = e.payload_mut().unwrap();
    out.truncate(out.len() - 16);
    out.extend_from_slice(&old);
    e.payload_injected(16, old.len() as u64, true).unwrap();
    assert_eq!(e.payload_position(), Some(old.len() as u64));

    e.add_payload_ref(b"a", &file, 16, 3).unwrap();
    // Backward, overlapping, or past the stream: refused, nothing written.
    let before = e.position();
    for (name, off, size) in [(&b"b"[..], 16, 3), (b"c", 20, 2), (b"d", 35, 100)] {
        let err = e.add_payload_ref(name, &file, off, size).unwrap_err();
        assert!(matches!(err.kind(), Error::InvalidInput { .. }), "{err}");
    }
    assert_eq!(e.position(), before);
    e.add_payload_ref(b"e", &file, 35, 2).unwrap();
    // Only the 16 bytes after the last reference may be absorbed, never referenced ones.
    assert!(e.payload_injected(17, 17, false).is_err());
    let (meta, payload) = e.finish_split().unwrap();
    assert_eq!(
        payload, old,
        "no second tail marker: the injected one ends it"
    );

    let ar = crate::pxar::decoder::Archive::open(meta, Some(payload), "reuse").unwrap();
    for (name, want) in [(&b"a"[..], &b"abc"[..]), (b"e", b"de")] {
        let f = ar.lookup_path(name).unwrap().unwrap();
        let mut buf = [0u8; 8];
        let n = ar.read(&f, 0, &mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}
