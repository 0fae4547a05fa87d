//! The base snapshot of a backup: its chunks are reused, kept safe by its shared lock,
//! and validated in the background unless it was verified recently (spec §11.5); a base
//! found missing chunks is marked failed so the next run heals the store.

use std::collections::HashSet;

use crate::store::format::archive::ArchiveKind;
use crate::store::format::manifest::{CryptMode, Manifest, VerifyState};
use crate::store::format::names::BackupDir;
use crate::store::lock::SharedSnapshotLock;
use crate::store::{Datastore, SnapshotInfo};
use crate::util::digest::Digest;
use crate::util::error::Result;
use crate::util::upid::Upid;

/// Is the base's verify state a recent, trustworthy success (spec §11.5)?
pub fn recently_verified(ds: &Datastore, m: &Manifest) -> bool {
    let Some(Ok(state)) = m.verify_state() else {
        return false;
    };
    if !state.ok {
        return false;
    }
    let Ok(upid) = Upid::parse(&state.upid) else {
        return false;
    };
    if !matches!(
        upid.worker_type.as_str(),
        "verify_snapshot" | "verify_group" | "verify" | "verificationjob"
    ) {
        return false;
    }
    let now = crate::util::time::now();
    if now - upid.starttime > 7 * 86_400 {
        return false;
    }
    match crate::store::ops::gc::last_gc_start(ds) {
        Some(gc_start) => upid.starttime > gc_start,
        None => true,
    }
}

pub(super) type BaseInfo = (HashSet<Digest>, Option<SharedSnapshotLock>, bool);

/// Lock the base shared and collect the digests it references; a base whose verify
/// state is failed is never reused, so the next run heals the store.
pub(super) fn load_base(ds: &Datastore, base: &SnapshotInfo) -> Result<BaseInfo> {
    let lock = ds.locker().lock_snapshot_shared(&base.dir)?;
    let m = match ds.load_manifest(&base.dir) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("not reusing chunks of base {}: {e}", base.dir);
            return Ok((HashSet::new(), Some(lock), false));
        }
    };
    if let Some(Ok(VerifyState { ok: false, .. })) = m.verify_state() {
        log::info!(
            "base {} failed verification: not reusing its chunks",
            base.dir
        );
        return Ok((HashSet::new(), Some(lock), false));
    }
    let mut digests = HashSet::new();
    for f in m.files()? {
        let is_index = ArchiveKind::of_file(&f.filename).is_some_and(ArchiveKind::is_index);
        if f.crypt_mode != CryptMode::None || !is_index {
            continue;
        }
        match ds.read_index(&ds.snapshot_path(&base.dir).join(&f.filename)) {
            Ok(idx) => digests.extend(idx.chunks().map(|c| c.digest)),
            Err(e) => log::warn!("not reusing chunks of {}/{}: {e}", base.dir, f.filename),
        }
    }
    let validate = !recently_verified(ds, &m);
    Ok((digests, Some(lock), validate))
}

pub(super) fn mark_base_failed(ds: &Datastore, base: &BackupDir) {
    let upid = Upid::new("backup", &base.worker_id(&ds.name()), "root@pam");
    let res = ds.update_manifest(base, |u| {
        let state = VerifyState {
            ok: false,
            upid: upid.to_string(),
        };
        u.insert("verify_state".into(), state.to_value());
        Ok(())
    });
    if let Err(e) = res {
        log::error!("could not mark base {base} as failed: {e}");
    }
}
