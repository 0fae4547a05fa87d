//! Real corrupt files: verify finds and names each kind of damage (exit 1) and records
//! `failed`; a clean store exits 0 and records `ok`; `cat` never returns bad bytes.

use std::path::{Path, PathBuf};

use crate::common::*;

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
    assert!(out.status.success(), "{}", stderr(&out));
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
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
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
    pbsfs::upid::Upid::parse(&upid).unwrap();
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
    assert_eq!(cat.status.code(), Some(2));
    assert!(stderr(&cat).contains(&c.digest), "{}", stderr(&cat));
    let source = pseudo_random(6 * 4096, 5);
    assert!(
        cat.stdout.len() < source.len() && source.starts_with(&cat.stdout),
        "only good bytes before the bad chunk"
    );
}

#[test]
fn a_chunk_with_other_content_under_its_name_is_a_digest_mismatch() {
    let c = store_with_image();
    let other = pbsfs::datastore::blob::encode(&pseudo_random(4096, 99), true).unwrap();
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
    assert_eq!(cat.status.code(), Some(2));
    assert!(cat.stdout.is_empty());
}

#[test]
fn rename_bad_moves_corrupt_chunks_aside() {
    let c = store_with_image();
    let mut raw = std::fs::read(&c.chunk).unwrap();
    raw[20] ^= 0xff;
    std::fs::write(&c.chunk, &raw).unwrap();
    let out = pbsfs(&["verify", s(&c.store), "vm/100/latest", "--rename-bad"]);
    assert_eq!(out.status.code(), Some(1));
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
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "damage, not an error: {text}");
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
    use pbsfs::datastore::blob::ENCRYPTED_BLOB_MAGIC_1_0;
    use pbsfs::datastore::fixed_index::FixedIndex;
    use pbsfs::datastore::manifest::{FileEntry, Manifest};
    use pbsfs::datastore::snapshot::{BackupDir, BackupNamespace};
    let tmp = TempDir::new("encrypted");
    let store = sparse_store(&tmp);
    let ds = pbsfs::Datastore::open(&store, None).unwrap();
    let d = BackupDir::parse(&BackupNamespace::root(), "vm/5/2024-01-01T00:00:00Z").unwrap();
    ds.create_group(&d.group, "root@pam").unwrap();
    let lock = ds.create_snapshot_dir(&d).unwrap();
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
    pbsfs::datastore::index::write_index_file(&path, &idx.to_bytes(), ds.owner()).unwrap();
    let mut m = Manifest::new(&d);
    m.add_file(&FileEntry {
        filename: "drive-scsi0.img.fidx".into(),
        crypt_mode: "encrypt".into(),
        size: 4096,
        csum: idx.csum,
    });
    ds.create_manifest(&d, &m, &lock).unwrap();
    drop(lock);

    let out = pbsfs(&["verify", s(&store)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("1 encrypted") && text.contains("not verifiable by content"),
        "{text}"
    );
    let cat = pbsfs(&["cat", s(&store), "vm/5/latest", "drive-scsi0.img"]);
    assert_eq!(cat.status.code(), Some(2));
    assert!(stderr(&cat).contains("key required"), "{}", stderr(&cat));
    // A flipped ciphertext bit is still found: the CRC covers it.
    let chunk = ds.chunk_store().chunk_path(&digest);
    let mut bad = std::fs::read(&chunk).unwrap();
    let n = bad.len() - 1;
    bad[n] ^= 1;
    std::fs::write(&chunk, bad).unwrap();
    assert_eq!(pbsfs(&["verify", s(&store)]).status.code(), Some(1));
}
