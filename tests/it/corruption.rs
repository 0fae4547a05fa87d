//! Real corrupt files: verify finds and names each kind of damage (exit 1) and records
//! `failed`; a clean store exits 0 and records `ok`; `cat` and reads through a mount
//! never return bad bytes (EIO for exactly the reads that touch a bad chunk, logged).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::mount_util::{corrupt_chunk, fixture, sh, Mounted};

struct Case {
    _tmp: TempDir,
    store: PathBuf,
    chunk: PathBuf,
    digest: String,
}

fn store_with_image() -> Case {
    let tmp = TempDir::new("corrupt");
    let store = sparse_store(&tmp);
    let out = backup_image(
        &store,
        &tmp,
        "vm/100",
        &pseudo_random(6 * 4096, 5),
        "2024-05-02T08:11:33Z",
    );
    ok(&out);
    let chunk = chunk_files(&store)[2].clone();
    let digest = chunk.file_name().unwrap().to_str().unwrap().to_string();
    Case {
        _tmp: tmp,
        store,
        chunk,
        digest,
    }
}

fn verify(store: &Path) -> (Option<i32>, String) {
    let out = pbsfs(&["verify", s(store)]);
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn state(store: &Path) -> String {
    snapshots_json(store)[0]["verification"]["state"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

#[test]
fn a_clean_store_verifies_with_exit_0_and_records_ok() {
    let c = store_with_image();
    let (code, out) = verify(&c.store);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(state(&c.store), "ok");
    let upid = snapshots_json(&c.store)[0]["verification"]["upid"]
        .as_str()
        .unwrap()
        .to_string();
    pbsfs::util::upid::Upid::parse(&upid).unwrap();
}

#[test]
fn a_flipped_byte_is_found_and_named() {
    let c = store_with_image();
    let mut raw = std::fs::read(&c.chunk).unwrap();
    let n = raw.len() - 1;
    raw[n] ^= 0x01;
    std::fs::write(&c.chunk, &raw).unwrap();
    let (code, out) = verify(&c.store);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&c.digest) && out.contains("CRC"), "{out}");
    assert!(
        out.contains("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img.fidx"),
        "names the archive: {out}"
    );
    assert_eq!(state(&c.store), "failed");
    // cat fails naming the chunk and never emits the bad chunk's bytes.
    let cat = pbsfs(&["cat", s(&c.store), "vm/100/latest", "drive-scsi0.img"]);
    let err = fails_with(&cat, 2);
    assert!(err.contains(&c.digest), "{err}");
    let source = pseudo_random(6 * 4096, 5);
    // Where the bad chunk sits in the image (chunk files are sorted by digest, not offset).
    let bad_at = source
        .chunks(4096)
        .position(|piece| pbsfs::Digest::of(piece).to_hex() == c.digest)
        .expect("the corrupted chunk is one of the image's")
        * 4096;
    assert!(
        cat.stdout.len() <= bad_at && source.starts_with(&cat.stdout),
        "only good bytes, all before the bad chunk at {bad_at}: got {} bytes",
        cat.stdout.len()
    );
}

#[test]
fn a_chunk_with_other_content_under_its_name_is_a_digest_mismatch() {
    let c = store_with_image();
    let other = pbsfs::store::format::blob::encode(&pseudo_random(4096, 99), true).unwrap();
    std::fs::write(&c.chunk, other).unwrap();
    let (code, out) = verify(&c.store);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&c.digest) && out.contains("digest mismatch"),
        "{out}"
    );
}

#[test]
fn a_missing_chunk_is_found_and_named() {
    let c = store_with_image();
    std::fs::remove_file(&c.chunk).unwrap();
    let (code, out) = verify(&c.store);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&c.digest) && out.contains("missing"), "{out}");
    assert_eq!(state(&c.store), "failed");
}

#[test]
fn a_truncated_chunk_is_found_and_named() {
    let c = store_with_image();
    let raw = std::fs::read(&c.chunk).unwrap();
    std::fs::write(&c.chunk, &raw[..raw.len() / 2]).unwrap();
    let (code, out) = verify(&c.store);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&c.digest), "{out}");
}

#[test]
fn a_truncated_index_is_found_and_named() {
    let c = store_with_image();
    let idx = c
        .store
        .join("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img.fidx");
    let raw = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &raw[..raw.len() - 10]).unwrap();
    let (code, out) = verify(&c.store);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("drive-scsi0.img.fidx") && out.contains("truncated"),
        "{out}"
    );
    assert_eq!(state(&c.store), "failed");
    let cat = pbsfs(&["cat", s(&c.store), "vm/100/latest", "drive-scsi0.img"]);
    fails_with(&cat, 2);
    assert!(cat.stdout.is_empty(), "{}", describe(&cat));
}

#[test]
fn rename_bad_moves_corrupt_chunks_aside() {
    let c = store_with_image();
    let mut raw = std::fs::read(&c.chunk).unwrap();
    raw[20] ^= 0xff;
    std::fs::write(&c.chunk, &raw).unwrap();
    let out = pbsfs(&["verify", s(&c.store), "vm/100/latest", "--rename-bad"]);
    let text = exits(&out, 1);
    assert!(text.contains(&c.digest), "{text}");
    assert!(!c.chunk.exists());
    assert!(c
        .chunk
        .with_file_name(format!("{}.0.bad", c.digest))
        .exists());
}

#[test]
fn a_corrupt_manifest_is_reported_not_trusted() {
    let c = store_with_image();
    let m = c.store.join("vm/100/2024-05-02T08:11:33Z/index.json.blob");
    let mut raw = std::fs::read(&m).unwrap();
    raw[15] ^= 0x40;
    std::fs::write(&m, &raw).unwrap();
    for target in [Some("vm/100/2024-05-02T08:11:33Z"), None] {
        let mut args = vec!["verify", s(&c.store)];
        args.extend(target);
        let out = pbsfs(&args);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "damage, not an error: {}",
            describe(&out)
        );
        assert!(
            text.contains("manifest")
                && text.contains("CRC")
                && text.contains("vm/100/2024-05-02T08:11:33Z"),
            "{text}"
        );
        assert!(
            stderr(&out).contains("could not record verify_state"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        std::fs::read(&m).unwrap(),
        raw,
        "nothing written over a manifest it cannot read"
    );
}

#[test]
fn encrypted_chunks_are_checked_by_crc_and_reported_as_not_verifiable() {
    use pbsfs::store::format::blob::ENCRYPTED_BLOB_MAGIC_1_0;
    use pbsfs::store::format::index::fixed::FixedIndex;
    use pbsfs::store::format::manifest::{FileEntry, Manifest};
    let tmp = TempDir::new("encrypted");
    let store = sparse_store(&tmp);
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let (d, lock) = new_snapshot_dir(&ds, "vm/5/2024-01-01T00:00:00Z");
    // An encrypted chunk: magic, CRC over the ciphertext, iv, tag, ciphertext.
    let cipher = pseudo_random(4096, 77);
    let mut raw = ENCRYPTED_BLOB_MAGIC_1_0.to_vec();
    raw.extend_from_slice(&crc32fast::hash(&cipher).to_le_bytes());
    raw.extend_from_slice(&[7u8; 32]);
    raw.extend_from_slice(&cipher);
    let digest = pbsfs::Digest::of(b"plaintext || id_key, unknowable here");
    ds.chunk_store().insert_chunk(&digest, &raw).unwrap();
    let idx = FixedIndex::new(4096, 4096, vec![digest], 0).unwrap();
    let path = ds.snapshot_path(&d).join("drive-scsi0.img.fidx");
    pbsfs::store::files::write_index_file(&path, &idx.to_bytes(), ds.owner()).unwrap();
    let mut m = Manifest::new(&d);
    m.add_file(&FileEntry {
        filename: "drive-scsi0.img.fidx".into(),
        crypt_mode: pbsfs::store::format::manifest::CryptMode::Encrypt,
        size: 4096,
        csum: idx.csum,
    });
    ds.create_manifest(&d, &m, &lock).unwrap();
    crate::mount_util::release_lock(&ds, &d, lock);

    let text = ok(&pbsfs(&["verify", s(&store)]));
    assert!(
        text.contains("1 encrypted") && text.contains("not verifiable by content"),
        "{text}"
    );
    let cat = pbsfs(&["cat", s(&store), "vm/5/latest", "drive-scsi0.img"]);
    let err = fails_with(&cat, 2);
    assert!(err.contains("key required"), "{err}");
    // A flipped ciphertext bit is still found: the CRC covers it.
    let chunk = ds.chunk_store().chunk_path(&digest);
    let mut bad = std::fs::read(&chunk).unwrap();
    let n = bad.len() - 1;
    bad[n] ^= 1;
    std::fs::write(&chunk, bad).unwrap();
    let text = exits(&pbsfs(&["verify", s(&store)]), 1);
    assert!(text.contains(&digest.to_hex()), "{text}");
}

#[test]
fn a_flipped_byte_in_one_chunk_fails_exactly_the_reads_that_touch_it() {
    let tmp = TempDir::new("mount-corrupt");
    let f = fixture(&tmp);
    // Corrupt the 6th 64 KiB chunk of drive-scsi0.img.
    let digest = corrupt_chunk(&f, 5);
    let m = Mounted::start(&f.store, &tmp.join("mnt"), &[]);
    let img = m.path("vm/100/2024-05-02T08:11:33Z/drive-scsi0.img");
    let out = sh(&format!("cat {} > /dev/null", img.display()));
    let err = fails(&out);
    assert!(err.contains("Input/output error"), "{err}");
    // Ranges before and after the bad chunk stay readable and correct.
    for (skip, count) in [(0u64, 5u64), (6, 10)] {
        let out = Command::new("dd")
            .arg(format!("if={}", img.display()))
            .args([
                "bs=64k",
                &format!("skip={skip}"),
                &format!("count={count}"),
                "status=none",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dd skip={skip} count={count}: {}",
            describe(&out)
        );
        let from = (skip * 65536) as usize;
        assert_eq!(out.stdout, f.img1[from..from + (count * 65536) as usize]);
    }
    // A read spanning the bad chunk fails whole; it never comes back short.
    let out = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .args([
            "bs=256k",
            "skip=1",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    fails(&out);
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    let log = m.log_text();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(&digest.to_hex()))
        .collect();
    assert_eq!(errors.len(), 1, "logged once:\n{log}");
    assert!(errors[0].contains("vm/100/2024-05-02T08:11:33Z"), "{log}");
    m.unmount();
}
