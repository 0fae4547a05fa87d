//! What pbsfs reads of a PBS installation: `datastore.cfg` (is this folder a configured
//! store, under which name, is it removable, S3-backed or in maintenance mode), the
//! `backup` user, and whether PBS certainly runs its new locking scheme (the
//! `old-locking` flag and the installed package's version in the dpkg status file).
//! `PBSFS_PBS_CONFIG_DIR`, `PBSFS_PBS_RUN_DIR`, `PBSFS_PBS_MOUNT_DIR` and
//! `PBSFS_DPKG_STATUS` point elsewhere for tests.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::store::files::Owner;
use crate::util::error::{Error, Result};

fn config_dir() -> PathBuf {
    std::env::var_os("PBSFS_PBS_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/proxmox-backup"))
}

pub fn run_dir() -> PathBuf {
    std::env::var_os("PBSFS_PBS_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/proxmox-backup"))
}

/// Where PBS mounts removable datastores (pbs-api-types `DATASTORE_MOUNT_DIR`).
fn mount_dir() -> PathBuf {
    std::env::var_os("PBSFS_PBS_MOUNT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/mnt/datastore"))
}

fn dpkg_status_path() -> PathBuf {
    std::env::var_os("PBSFS_DPKG_STATUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/dpkg/status"))
}

/// One `datastore:` section of `datastore.cfg`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreConfig {
    pub name: String,
    pub path: PathBuf,
    /// `maintenance-mode` property string, e.g. `type=read-only,message=...`.
    pub maintenance_mode: Option<String>,
    /// `backend` property string, e.g. `type=s3,client=...`.
    pub backend: Option<String>,
    /// `backing-device` (a file system UUID): set for a removable datastore, whose data
    /// is then at `<mount dir>/<name>`, and whose `path` is relative to the device.
    pub backing_device: Option<String>,
}

impl StoreConfig {
    /// Where the store's data is, as PBS sees it (pbs-api-types `absolute_path`): the
    /// mount point of a removable store, else `path`.
    pub fn data_path(&self) -> PathBuf {
        match self.backing_device {
            Some(_) => mount_dir().join(&self.name),
            None => self.path.clone(),
        }
    }

    /// PBS ≥ 4.2's move journal of this store (spec §11.9).
    pub fn move_journal_path(&self) -> PathBuf {
        run_dir()
            .join("locks")
            .join(&self.name)
            .join("move-journal")
    }
}

/// Parse `datastore.cfg`'s `datastore:` sections.
fn parse_datastore_cfg(text: &str) -> Vec<StoreConfig> {
    let mut out: Vec<StoreConfig> = Vec::new();
    let mut in_store = false;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            in_store = false;
            if let Some((ty, name)) = line.split_once(':') {
                if ty.trim() == "datastore" {
                    in_store = true;
                    out.push(StoreConfig {
                        name: name.trim().to_string(),
                        path: PathBuf::new(),
                        ..StoreConfig::default()
                    });
                }
            }
            continue;
        }
        if !in_store {
            continue;
        }
        let cur = out.last_mut().expect("inside a section");
        let l = line.trim();
        let (k, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        let v = v.trim();
        match k {
            "path" => cur.path = PathBuf::from(v),
            "maintenance-mode" => cur.maintenance_mode = Some(v.to_string()),
            "backend" => cur.backend = Some(v.to_string()),
            "backing-device" => cur.backing_device = Some(v.to_string()),
            _ => {}
        }
    }
    out
}

/// The PBS store whose data is at `root`, or the one named `name`. `Ok(None)` when
/// there is no PBS configuration or no section matches; then, if `root` looks like a
/// PBS store (owned by the `backup` user), a warning says once that PBS's locks are not
/// taken.
pub fn find_store(root: &Path, name: Option<&str>) -> Result<Option<StoreConfig>> {
    let cfg = config_dir().join("datastore.cfg");
    let text = match fs::read_to_string(&cfg) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match name {
                Some(n) => Err(Error::not_found(format!(
                    "{} (needed for PBS datastore '{n}')",
                    cfg.display()
                ))),
                None => {
                    warn_if_unmanaged(root, &cfg);
                    Ok(None)
                }
            };
        }
        Err(e) => return Err(Error::io(cfg.display(), e)),
    };
    let stores = parse_datastore_cfg(&text);
    if let Some(n) = name {
        let s = stores
            .into_iter()
            .find(|s| s.name == n)
            .ok_or_else(|| Error::not_found(format!("PBS datastore '{n}' in {}", cfg.display())))?;
        return Ok(Some(s));
    }
    let want = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let id = fs::metadata(root).ok().map(|m| (m.dev(), m.ino()));
    let found = stores.into_iter().find(|s| is_store_at(s, &want, id));
    if found.is_none() {
        warn_if_unmanaged(root, &cfg);
    }
    Ok(found)
}

/// Whether `s` keeps its data in the folder `root` (canonical, with device and inode
/// `id`): the same canonical path (symlinks resolved), or the same device and inode (a
/// bind mount shows one folder under another path).
fn is_store_at(s: &StoreConfig, root: &Path, id: Option<(u64, u64)>) -> bool {
    let data = s.data_path();
    // A relative `path` (a removable store's path on its device) names no folder here.
    if !data.is_absolute() {
        return false;
    }
    match fs::canonicalize(&data) {
        Ok(c) if c == root => return true,
        Err(_) if data == root => return true,
        _ => {}
    }
    match (fs::metadata(&data), id) {
        (Ok(m), Some(id)) => (m.dev(), m.ino()) == id,
        _ => false,
    }
}

/// Warn once per folder when `root` belongs to the `backup` user, as PBS stores do, but
/// no `datastore.cfg` section matched it: if PBS uses it, pbsfs takes none of PBS's
/// locks and sees none of its maintenance modes.
fn warn_if_unmanaged(root: &Path, cfg: &Path) {
    static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let backup = backup_user();
    match fs::metadata(root) {
        Ok(m) if backup.uid != 0 && m.uid() == backup.uid => {}
        _ => return,
    }
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned.insert(root.to_path_buf()) {
        log::warn!(
            "{} belongs to the backup user like a PBS datastore, but {} does not list it: \
             PBS's locks are not taken (if PBS uses this store, name it with --pbs-store)",
            root.display(),
            cfg.display()
        );
    }
}

/// The `backup` user and group that PBS runs as (Debian: 34:34).
pub fn backup_user() -> Owner {
    let find = |file: &str| -> Option<u32> {
        let text = fs::read_to_string(file).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"backup") && f.len() > 2).then(|| f[2].parse().ok())?
        })
    };
    Owner {
        uid: find("/etc/passwd").unwrap_or(34),
        gid: find("/etc/group").unwrap_or(34),
    }
}

const PBS_PACKAGE: &str = "proxmox-backup-server";
/// The first PBS release with the new locking scheme (spec §5.3).
const NEW_LOCKING_SINCE: &str = "3.3.5";

/// Why PBS may still run its old locking scheme, or `None` when the new one is certain:
/// `<run dir>/old-locking` is absent and the installed `proxmox-backup-server` is 3.3.5
/// or newer (PBS 2.2-3.3.4 never creates the flag, so it alone proves nothing). Whatever
/// cannot be read counts as "not certain". Decides whether an emptied group folder may be
/// removed on a PBS-managed store (spec §11.9).
pub fn old_locking_possible() -> Option<String> {
    let flag = run_dir().join("old-locking");
    match fs::symlink_metadata(&flag) {
        Ok(_) => return Some(format!("{} exists", flag.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Some(format!("{}: {e}", flag.display())),
    }
    let status = dpkg_status_path();
    let text = match fs::read(&status) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return Some(format!("{}: {e}", status.display())),
    };
    match installed_version(&text, PBS_PACKAGE) {
        None => Some(format!(
            "{PBS_PACKAGE} is not installed according to {}",
            status.display()
        )),
        Some(v) if compare_debian_versions(&v, NEW_LOCKING_SINCE) == Ordering::Less => Some(
            format!("{PBS_PACKAGE} {v} is older than {NEW_LOCKING_SINCE}"),
        ),
        Some(_) => None,
    }
}

/// Why an emptied group folder must stay, or `None` when it may go (spec §11.9): PBS
/// removes one only in its new locking scheme (in the old one, removing the folder would
/// race a backup creating it); stores PBS does not manage have no such race.
pub fn why_keep_emptied_groups(cfg: Option<&StoreConfig>) -> Option<String> {
    cfg.and_then(|_| old_locking_possible())
}

/// The version of `package` in a dpkg status file, if its `Status` says `installed`
/// (not `config-files`, `half-installed`, ...).
fn installed_version(status: &str, package: &str) -> Option<String> {
    let (mut name, mut state, mut version) = (None, None, None);
    // A blank line ends a paragraph; the sentinel ends the last one.
    for line in status.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            let installed = state
                .and_then(|s: &str| s.split_whitespace().last())
                .is_some_and(|w| w == "installed");
            if name == Some(package) && installed {
                return version.map(str::to_string);
            }
            (name, state, version) = (None, None, None);
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            continue; // continuation of a multi-line field
        }
        if let Some((k, v)) = line.split_once(':') {
            match k {
                "Package" => name = Some(v.trim()),
                "Status" => state = Some(v.trim()),
                "Version" => version = Some(v.trim()),
                _ => {}
            }
        }
    }
    None
}

/// Compare two Debian versions (`[epoch:]upstream[-revision]`) as dpkg does.
pub fn compare_debian_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let v = v.trim();
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => {
                (e.parse().unwrap_or(u64::MAX), r)
            }
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((u, r)) => (epoch, u, r),
            None => (epoch, rest, ""),
        }
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

/// dpkg's `verrevcmp`: alternate non-digit runs (compared by `order`, `~` before
/// everything, even the end; letters before other characters) and digit runs
/// (compared as numbers).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_refusals() {
        let cfg = "datastore: store1\n\tpath /mnt/s1\n\tcomment x\n\n\
                   datastore: s3store\n\tpath /mnt/s3\n\tbackend type=s3,client=c,bucket=b\n\
                   datastore: maint\n\tpath /mnt/m\n\tmaintenance-mode type=read-only,message=disk swap\n\
                   other: x\n\tpath /nope\n";
        let s = parse_datastore_cfg(cfg);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "store1");
        assert_eq!(s[0].path, PathBuf::from("/mnt/s1"));
        assert_eq!(s[0].backend, None);
        assert_eq!(s[1].backend.as_deref(), Some("type=s3,client=c,bucket=b"));
        assert_eq!(
            s[2].maintenance_mode.as_deref(),
            Some("type=read-only,message=disk swap")
        );
    }

    #[test]
    fn a_removable_store_keeps_its_data_under_the_mount_dir() {
        let cfg = "datastore: usb\n\tpath backups/pbs\n\tbacking-device 0f1e-2d3c\n\n\
                   datastore: fixed\n\tpath /srv/fixed\n";
        let s = parse_datastore_cfg(cfg);
        assert_eq!(s[0].backing_device.as_deref(), Some("0f1e-2d3c"));
        assert_eq!(s[0].path, PathBuf::from("backups/pbs"));
        assert_eq!(s[0].data_path(), mount_dir().join("usb"));
        assert_eq!(s[1].backing_device, None);
        assert_eq!(s[1].data_path(), PathBuf::from("/srv/fixed"));
        // A relative path never matches a folder (it is relative to the device).
        assert!(!is_store_at(&s[1], Path::new("/srv/other"), None));
        let rel = StoreConfig {
            path: "store".into(),
            ..StoreConfig::default()
        };
        assert!(!is_store_at(&rel, Path::new("store"), None));
    }

    #[test]
    fn debian_versions_compare_as_dpkg_does() {
        use Ordering::*;
        for (a, b, want) in [
            ("3.3.4-1", "3.3.5", Less),
            ("3.3.5", "3.3.5", Equal),
            ("3.3.5-1", "3.3.5", Greater),
            ("3.3.5", "3.3.5-0", Equal),
            ("3.3.10-1", "3.3.5", Greater),
            ("3.3.9", "3.3.10", Less),
            ("4.2.3-1", "3.3.5", Greater),
            ("3.3.05", "3.3.5", Equal),
            ("3.3.5~rc1", "3.3.5", Less),
            ("3.3.5+b1", "3.3.5", Greater),
            ("3.3.5a", "3.3.5+", Less),
            ("1:0.1", "9.9", Greater),
            ("3.2.14-1", "3.3.4-1", Less),
        ] {
            assert_eq!(compare_debian_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_debian_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn the_installed_version_comes_from_the_packages_own_paragraph() {
        let status = "Package: proxmox-backup-client\nStatus: install ok installed\n\
                      Version: 9.9.9\n\n\
                      Package: proxmox-backup-server\nStatus: install ok installed\n\
                      Description: server\n more text: with a colon\nVersion: 3.3.4-1\n\n\
                      Package: proxmox-backup-docs\nStatus: deinstall ok config-files\n\
                      Version: 4.0.0\n";
        assert_eq!(
            installed_version(status, PBS_PACKAGE).as_deref(),
            Some("3.3.4-1")
        );
        assert_eq!(installed_version(status, "proxmox-backup-docs"), None);
        assert_eq!(installed_version(status, "nope"), None);
        let last = "Package: proxmox-backup-server\nVersion: 4.2.3-1\nStatus: install ok installed";
        assert_eq!(
            installed_version(last, PBS_PACKAGE).as_deref(),
            Some("4.2.3-1")
        );
        let half = "Package: proxmox-backup-server\nStatus: install reinstreq half-installed\n\
                    Version: 4.2.3-1\n";
        assert_eq!(installed_version(half, PBS_PACKAGE), None);
    }
}
