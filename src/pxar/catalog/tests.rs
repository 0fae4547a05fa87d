//! Tests of the catalog: varints against PBS's encodings, a written catalog read back,
//! the exact bytes of a small one, and bad input refused with the offset.

use super::*;

fn dec_u64(b: &[u8]) -> u64 {
    Cursor {
        data: b,
        at: 0,
        base: 0,
    }
    .u64()
    .unwrap()
}

fn dec_i64(b: &[u8]) -> i64 {
    let mut c = Cursor {
        data: b,
        at: 0,
        base: 0,
    };
    let v = c.i64().unwrap();
    assert_eq!(c.at, b.len(), "the whole encoding is consumed");
    v
}

#[test]
fn varints_match_pbs_encodings_and_round_trip() {
    let mut b = Vec::new();
    encode_u64(&mut b, 300);
    assert_eq!(b, [0xac, 0x02]);
    b.clear();
    encode_i64(&mut b, -1);
    assert_eq!(b, [0x81, 0x00]);
    b.clear();
    encode_i64(&mut b, -300);
    assert_eq!(b, [0xac, 0x82, 0x00]);
    b.clear();
    encode_i64(&mut b, 0);
    assert_eq!(b, [0x00]);
    for v in [
        0u64,
        1,
        126,
        127,
        128,
        (1 << 20) - 1,
        (1 << 50) - 1,
        u64::MAX,
    ] {
        let mut b = Vec::new();
        encode_u64(&mut b, v);
        assert_eq!(dec_u64(&b), v);
    }
    for v in [
        0i64,
        1,
        -1,
        126,
        -126,
        -4097,
        1 << 40,
        -(1 << 40),
        i64::MIN,
        i64::MAX,
    ] {
        let mut b = Vec::new();
        encode_i64(&mut b, v);
        assert_eq!(dec_i64(&b), v, "{v}");
    }
}

fn sample() -> Vec<u8> {
    let mut w = CatalogWriter::new(Vec::new()).unwrap();
    w.start_directory(b"root.pxar.didx").unwrap();
    w.add_file(b".pxarexclude-cli", 6, 0).unwrap();
    w.start_directory(b"a dir").unwrap();
    w.add_file(b"f\nnewline", 12345, -86_400 * 365).unwrap();
    w.add_entry(b"h", CatalogAttr::Hardlink).unwrap();
    w.start_directory(b"empty").unwrap();
    w.end_directory().unwrap();
    w.end_directory().unwrap();
    w.add_entry(b"dev", CatalogAttr::CharDevice).unwrap();
    w.add_entry(b"\xff\xfe", CatalogAttr::Symlink).unwrap();
    w.add_entry(b"p", CatalogAttr::Fifo).unwrap();
    w.add_entry(b"s", CatalogAttr::Socket).unwrap();
    w.add_entry(b"b", CatalogAttr::BlockDevice).unwrap();
    w.end_directory().unwrap();
    w.start_directory(b"etc.pxar.didx").unwrap();
    w.add_file(b"hostname", 5, 1_700_000_000).unwrap();
    w.end_directory().unwrap();
    w.finish().unwrap()
}

#[test]
fn a_written_catalog_reads_back() {
    let raw = sample();
    let r = CatalogReader::open(&raw[..]).unwrap();
    let root = r.read_dir(r.root()).unwrap();
    let names: Vec<&[u8]> = root.iter().map(|e| &e.name[..]).collect();
    assert_eq!(names, [&b"root.pxar.didx"[..], b"etc.pxar.didx"]);
    let mut all = Vec::new();
    r.walk(r.root(), &mut |p, e| all.push((p.to_vec(), e.attr)))
        .unwrap();
    let show: Vec<(String, u8)> = all
        .iter()
        .map(|(p, a)| (String::from_utf8_lossy(p).into_owned(), a.type_byte()))
        .collect();
    let want = [
        ("root.pxar.didx", b'd'),
        ("root.pxar.didx/.pxarexclude-cli", b'f'),
        ("root.pxar.didx/a dir", b'd'),
        ("root.pxar.didx/a dir/f\nnewline", b'f'),
        ("root.pxar.didx/a dir/h", b'h'),
        ("root.pxar.didx/a dir/empty", b'd'),
        ("root.pxar.didx/dev", b'c'),
        ("root.pxar.didx/\u{fffd}\u{fffd}", b'l'),
        ("root.pxar.didx/p", b'p'),
        ("root.pxar.didx/s", b's'),
        ("root.pxar.didx/b", b'b'),
        ("etc.pxar.didx", b'd'),
        ("etc.pxar.didx/hostname", b'f'),
    ];
    let want: Vec<(String, u8)> = want.iter().map(|(p, t)| (p.to_string(), *t)).collect();
    assert_eq!(show, want);
    let f = all.iter().find(|(p, _)| p.ends_with(b"newline")).unwrap().1;
    assert_eq!(
        f,
        CatalogAttr::File {
            size: 12345,
            mtime: -86_400 * 365
        }
    );
    assert!(all.iter().any(|(p, _)| p == b"root.pxar.didx/\xff\xfe"));
}

#[test]
fn a_tiny_catalog_is_byte_exact() {
    let mut w = CatalogWriter::new(Vec::new()).unwrap();
    w.start_directory(b"r.pxar.didx").unwrap();
    w.add_file(b"x", 3, -1).unwrap();
    w.end_directory().unwrap();
    let raw = w.finish().unwrap();
    let mut want = CATALOG_MAGIC.to_vec();
    // Block of r.pxar.didx at 8: len 7, count 1, 'f', 1, "x", size 3, mtime -1.
    want.extend_from_slice(&[7, 1, b'f', 1, b'x', 3, 0x81, 0x00]);
    // Root block at 16: len 15, count 1, 'd', 11, name, distance 16 - 8.
    want.extend_from_slice(&[15, 1, b'd', 11]);
    want.extend_from_slice(b"r.pxar.didx");
    want.push(8);
    want.extend_from_slice(&16u64.to_le_bytes());
    assert_eq!(raw, want);
}

#[test]
fn bad_catalogs_are_errors_naming_the_offset() {
    let raw = sample();
    let check = |data: &[u8], want: &str| {
        let res = CatalogReader::open(data).and_then(|r| {
            r.walk(r.root(), &mut |_, _| {})?;
            Ok(())
        });
        let e = res.expect_err(want);
        assert!(matches!(e.kind(), Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e} lacks {want}");
    };
    check(&raw[..10], "too short");
    let mut m = raw.clone();
    m[0] ^= 1;
    check(&m, "magic");
    let n = raw.len();
    let mut m = raw.clone();
    m[n - 8..].copy_from_slice(&(n as u64).to_le_bytes());
    check(&m, "outside the file");
    // The root block's length claims the whole file and more.
    let root = u64::from_le_bytes(raw[n - 8..].try_into().unwrap()) as usize;
    let mut m = raw.clone();
    m[root] = 0x7f;
    check(&m, "runs past");
    // A truncated catalog: its root offset now points past the end.
    check(&raw[..n - 3], "offset");
    // A directory distance pointing before the magic.
    let mut w = CatalogWriter::new(Vec::new()).unwrap();
    w.start_directory(b"a").unwrap();
    w.end_directory().unwrap();
    let mut m = w.finish().unwrap();
    let dpos = m.len() - 8 - 1;
    m[dpos] = 100;
    check(&m, "distance");
    // An unknown type byte.
    let mut m = raw.clone();
    let t = root + 2;
    assert_eq!(m[t], b'd');
    m[t] = b'z';
    check(&m, "unknown entry type");
}
