//! The manifest `index.json.blob` (spec §4): its JSON (exact keys; unknown keys at the
//! top level, in `files[]` and in `unprotected` kept verbatim), and the only ways to write
//! one: `Datastore::update_manifest` and `Datastore::create_manifest`, both of which hold
//! a `ManifestLock` while storing.

use serde_json::{Map, Value};

use crate::store::format::blob;
use crate::store::format::index::Index;
use crate::store::format::names::BackupDir;
use crate::util::digest::Digest;
use crate::util::error::{CorruptKind, Error, Result};

const MANIFEST: &str = "manifest";
const VERIFY_STATE: &str = "verify_state";

pub const MANIFEST_BLOB_NAME: &str = "index.json.blob";
pub const CLIENT_LOG_BLOB_NAME: &str = "client.log.blob";

/// One `files[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub filename: String,
    /// Missing means `none`.
    pub crypt_mode: CryptMode,
    /// fidx: image size; didx: stream length; blob: encoded file size.
    pub size: u64,
    /// fidx/didx: index checksum; blob: sha256 of the encoded file.
    pub csum: Digest,
}

/// A `files[]` entry's `crypt-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptMode {
    None,
    Encrypt,
    SignOnly,
}

impl CryptMode {
    pub fn parse(s: &str) -> Option<CryptMode> {
        match s {
            "none" => Some(CryptMode::None),
            "encrypt" => Some(CryptMode::Encrypt),
            "sign-only" => Some(CryptMode::SignOnly),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CryptMode::None => "none",
            CryptMode::Encrypt => "encrypt",
            CryptMode::SignOnly => "sign-only",
        }
    }
}

impl FileEntry {
    /// A blob file's bytes against this entry: size and sha256 of the encoded file.
    pub fn check_blob(&self, raw: &[u8]) -> Result<()> {
        if raw.len() as u64 != self.size {
            return Err(Error::corrupt(
                "blob",
                CorruptKind::ManifestMismatch {
                    field: "size",
                    actual: raw.len().to_string(),
                    manifest: self.size.to_string(),
                },
            ));
        }
        let csum = Digest::of(raw);
        if csum != self.csum {
            return Err(Error::corrupt(
                "blob",
                CorruptKind::ManifestMismatch {
                    field: "checksum",
                    actual: csum.to_hex(),
                    manifest: self.csum.to_hex(),
                },
            ));
        }
        Ok(())
    }

    /// An index against this entry: its checksum and the size it describes.
    pub fn check_index(&self, idx: &Index) -> Result<()> {
        if idx.csum() != self.csum {
            return Err(Error::corrupt(
                "index",
                CorruptKind::ManifestMismatch {
                    field: "checksum",
                    actual: idx.csum().to_hex(),
                    manifest: self.csum.to_hex(),
                },
            ));
        }
        if idx.size() != self.size {
            return Err(Error::corrupt(
                "index",
                CorruptKind::ManifestMismatch {
                    field: "size",
                    actual: idx.size().to_string(),
                    manifest: self.size.to_string(),
                },
            ));
        }
        Ok(())
    }
}

/// `unprotected.verify_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyState {
    pub ok: bool,
    pub upid: String,
}

impl VerifyState {
    pub fn from_value(v: &Value) -> Result<VerifyState> {
        let obj = v.as_object().ok_or_else(|| Error::InvalidVerifyState {
            what: VERIFY_STATE.into(),
            why: "must be a JSON object".into(),
        })?;
        let ok = match obj.get("state").and_then(Value::as_str) {
            Some("ok") => true,
            Some("failed") => false,
            other => {
                return Err(Error::InvalidVerifyState {
                    what: VERIFY_STATE.into(),
                    why: format!(
                        "state must be \"ok\" or \"failed\", not {}",
                        other
                            .map(|s| format!("\"{s}\""))
                            .unwrap_or_else(|| "missing".into())
                    ),
                })
            }
        };
        let upid =
            obj.get("upid")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::InvalidVerifyState {
                    what: VERIFY_STATE.into(),
                    why: "upid is missing".into(),
                })?;
        crate::util::upid::Upid::parse(upid).map_err(|e| Error::InvalidVerifyState {
            what: VERIFY_STATE.into(),
            why: e.to_string(),
        })?;
        Ok(VerifyState {
            ok,
            upid: upid.to_string(),
        })
    }

    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "state".into(),
            Value::from(if self.ok { "ok" } else { "failed" }),
        );
        m.insert("upid".into(), Value::from(self.upid.clone()));
        Value::Object(m)
    }
}

/// A parsed, validated manifest. The JSON object itself is the source of truth, so
/// nothing pbsfs does not understand is ever lost on rewrite.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    map: Map<String, Value>,
}

impl Manifest {
    /// An empty manifest for a new snapshot.
    pub fn new(dir: &BackupDir) -> Manifest {
        let mut map = Map::new();
        map.insert("backup-type".into(), Value::from(dir.group.ty.as_str()));
        map.insert("backup-id".into(), Value::from(dir.group.id.clone()));
        map.insert("backup-time".into(), Value::from(dir.time));
        map.insert("files".into(), Value::Array(Vec::new()));
        map.insert("signature".into(), Value::Null);
        map.insert("unprotected".into(), Value::Object(Map::new()));
        Manifest { map }
    }

    pub fn from_json(text: &[u8]) -> Result<Manifest> {
        let v: Value = serde_json::from_slice(text)
            .map_err(|e| Error::format(MANIFEST, format!("not valid JSON: {e}")))?;
        let Value::Object(mut map) = v else {
            return Err(Error::format(MANIFEST, "not a JSON object"));
        };
        // Pre-0.8 manifests have no `unprotected`; PBS treats that as `{}`.
        match map.get("unprotected") {
            None | Some(Value::Null) => {
                map.insert("unprotected".into(), Value::Object(Map::new()));
            }
            Some(Value::Object(_)) => {}
            Some(_) => return Err(Error::format(MANIFEST, "'unprotected' is not an object")),
        }
        let m = Manifest { map };
        m.validate()?;
        Ok(m)
    }

    #[cfg(test)]
    /// Decode `index.json.blob` bytes (CRC checked).
    fn from_blob(raw: &[u8]) -> Result<Manifest> {
        let json = blob::decode(raw).map_err(|e| e.context("manifest blob"))?;
        Manifest::from_json(&json)
    }

    fn validate(&self) -> Result<()> {
        let s = |k: &str| -> Result<&str> {
            self.map.get(k).and_then(Value::as_str).ok_or_else(|| {
                Error::format(MANIFEST, format!("key '{k}' missing or not a string"))
            })
        };
        crate::store::format::names::BackupType::parse(s("backup-type")?)
            .map_err(|e| Error::format(MANIFEST, e))?;
        s("backup-id")?;
        self.map
            .get("backup-time")
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                Error::format(MANIFEST, "key 'backup-time' missing or not an integer")
            })?;
        self.files()?;
        Ok(())
    }

    fn backup_type(&self) -> &str {
        self.map["backup-type"].as_str().expect("validated")
    }

    fn backup_id(&self) -> &str {
        self.map["backup-id"].as_str().expect("validated")
    }

    pub fn backup_time(&self) -> i64 {
        self.map["backup-time"].as_i64().expect("validated")
    }

    /// The manifest must describe the folder it is in.
    pub fn check_matches(&self, dir: &BackupDir) -> Result<()> {
        if self.backup_type() != dir.group.ty.as_str()
            || self.backup_id() != dir.group.id
            || self.backup_time() != dir.time
        {
            return Err(Error::format(
                MANIFEST,
                format!(
                    "describes {}/{}/{} but lies in {dir}",
                    self.backup_type(),
                    self.backup_id(),
                    crate::util::time::format_utc(self.backup_time())
                        .unwrap_or_else(|| self.backup_time().to_string())
                ),
            ));
        }
        Ok(())
    }

    pub fn files(&self) -> Result<Vec<FileEntry>> {
        let arr = match self.map.get("files") {
            Some(Value::Array(a)) => a,
            _ => return Err(Error::format(MANIFEST, "'files' missing or not an array")),
        };
        arr.iter()
            .enumerate()
            .map(|(i, f)| {
                let bad = |what: &str| Error::format(MANIFEST, format!("files[{i}]: {what}"));
                let filename = f
                    .get("filename")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("no filename"))?;
                if filename.contains('/') || filename.starts_with('.') || filename.is_empty() {
                    return Err(bad(&format!("invalid filename '{filename}'")));
                }
                let crypt_mode = match f.get("crypt-mode") {
                    None | Some(Value::Null) => CryptMode::None,
                    Some(Value::String(s)) => CryptMode::parse(s)
                        .ok_or_else(|| bad(&format!("invalid crypt-mode \"{s}\"")))?,
                    Some(other) => return Err(bad(&format!("invalid crypt-mode {other}"))),
                };
                let size = f
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("no size"))?;
                let csum = f
                    .get("csum")
                    .and_then(Value::as_str)
                    .and_then(Digest::from_hex)
                    .ok_or_else(|| bad("csum is not 64 hex digits"))?;
                Ok(FileEntry {
                    filename: filename.to_string(),
                    crypt_mode,
                    size,
                    csum,
                })
            })
            .collect()
    }

    pub fn file(&self, filename: &str) -> Option<FileEntry> {
        self.files()
            .ok()?
            .into_iter()
            .find(|f| f.filename == filename)
    }

    /// Add (or replace) a `files[]` entry.
    pub fn add_file(&mut self, entry: &FileEntry) {
        let mut m = Map::new();
        m.insert("filename".into(), Value::from(entry.filename.clone()));
        m.insert("crypt-mode".into(), Value::from(entry.crypt_mode.as_str()));
        m.insert("size".into(), Value::from(entry.size));
        m.insert("csum".into(), Value::from(entry.csum.to_hex()));
        let arr = self
            .map
            .get_mut("files")
            .and_then(Value::as_array_mut)
            .expect("validated");
        arr.retain(|f| f.get("filename").and_then(Value::as_str) != Some(&entry.filename));
        arr.push(Value::Object(m));
    }

    pub fn unprotected(&self) -> &Map<String, Value> {
        self.map["unprotected"].as_object().expect("validated")
    }

    /// For `create_manifest` callers building a new manifest; existing manifests change
    /// only through `update_manifest`.
    pub fn unprotected_mut(&mut self) -> &mut Map<String, Value> {
        self.map
            .get_mut("unprotected")
            .and_then(Value::as_object_mut)
            .expect("validated")
    }

    pub fn notes(&self) -> Option<&str> {
        self.unprotected().get("notes").and_then(Value::as_str)
    }

    /// The recorded verify state; `Err` when present but unparsable (PBS then treats the
    /// snapshot as unverified).
    pub fn verify_state(&self) -> Option<Result<VerifyState>> {
        self.unprotected()
            .get("verify_state")
            .map(VerifyState::from_value)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// PBS's serialisation: `to_string_pretty`, keys sorted (no `preserve_order`).
    fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.map).expect("a JSON map serialises")
    }

    /// The blob PBS stores: zstd-compressed when that is not larger, never encrypted.
    pub fn to_blob(&self) -> Result<Vec<u8>> {
        blob::encode(self.to_json_pretty().as_bytes(), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::names::BackupNamespace;

    const SAMPLE: &str = r#"{
  "backup-id": "100",
  "backup-time": 1714637493,
  "backup-type": "vm",
  "files": [
    {"crypt-mode": "none", "csum": "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8",
     "filename": "drive-scsi0.img.fidx", "size": 4194304, "future-field": [1, 2]}
  ],
  "signature": null,
  "some-future-signed-key": {"x": 1},
  "unprotected": {"notes": "hello", "my-tool": {"k": true}}
}"#;

    #[test]
    fn round_trip_keeps_unknown_keys_everywhere() {
        let m = Manifest::from_json(SAMPLE.as_bytes()).unwrap();
        let d = BackupDir::parse(&BackupNamespace::root(), "vm/100/2024-05-02T08:11:33Z").unwrap();
        m.check_matches(&d).unwrap();
        let again = Manifest::from_blob(&m.to_blob().unwrap()).unwrap();
        assert_eq!(again, m);
        let map = again.as_map();
        assert_eq!(map["some-future-signed-key"]["x"], 1);
        assert_eq!(map["unprotected"]["my-tool"]["k"], true);
        assert_eq!(map["files"][0]["future-field"][1], 2);
        assert_eq!(again.notes(), Some("hello"));
        let json = again.to_json_pretty();
        assert!(
            json.starts_with("{\n  \"backup-id\": \"100\",\n  \"backup-time\""),
            "{json}"
        );
        assert!(!json.ends_with('\n'));
    }

    #[test]
    fn bad_manifests_are_refused() {
        assert!(Manifest::from_json(b"{").is_err());
        assert!(Manifest::from_json(
            br#"{"backup-type":"xx","backup-id":"1","backup-time":1,"files":[]}"#
        )
        .is_err());
        let wrong = SAMPLE.replace("drive-scsi0.img.fidx", "../evil.fidx");
        assert!(Manifest::from_json(wrong.as_bytes()).is_err());
        let d = BackupDir::parse(&BackupNamespace::root(), "vm/101/2024-05-02T08:11:33Z").unwrap();
        let m = Manifest::from_json(SAMPLE.as_bytes()).unwrap();
        assert!(m
            .check_matches(&d)
            .unwrap_err()
            .to_string()
            .contains("lies in"));
    }

    #[test]
    fn legacy_manifest_without_unprotected_or_crypt_mode() {
        let m = Manifest::from_json(
            br#"{"backup-type":"ct","backup-id":"1","backup-time":5,"files":[{"filename":"a.blob","size":3,"csum":"00000000000000000000000000000000000000000000000000000000000000aa"}]}"#,
        )
        .unwrap();
        assert!(m.unprotected().is_empty());
        assert_eq!(m.files().unwrap()[0].crypt_mode, CryptMode::None);
    }
}
