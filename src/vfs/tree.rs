//! Folder nodes of the view: namespaces, `ns/`, type folders, groups and snapshots, with
//! what each lists and finds by name, plus the two small files of a group (`owner`,
//! read-only) and its `latest` link. Names come from the datastore and are validated;
//! anything that does not parse is skipped, never followed.

use crate::store::format::names::{BackupDir, BackupGroup, BackupNamespace, BackupType};
use crate::store::GROUP_OWNER;
use crate::util::error::{Error, Result};

use super::node::{attr_from_md, systime, Node, LATEST, MANIFEST_JSON, NOTES, VERIFY_STATE};
use super::{Attr, Kind, Vfs};

impl Vfs {
    pub(super) fn list_namespace(&self, ns: &BackupNamespace) -> Result<Vec<(String, Node)>> {
        let groups = self.ds.list_groups(ns)?;
        let mut out = Vec::new();
        for ty in BackupType::ALL {
            if groups.iter().any(|g| g.ty == ty) {
                out.push((ty.as_str().to_string(), Node::TypeDir(ns.clone(), ty)));
            }
        }
        if !self.ds.list_child_namespaces(ns)?.is_empty() {
            out.push(("ns".to_string(), Node::NsDir(ns.clone())));
        }
        Ok(out)
    }

    pub(super) fn list_child_namespaces(
        &self,
        ns: &BackupNamespace,
    ) -> Result<Vec<(String, Node)>> {
        Ok(self
            .ds
            .list_child_namespaces(ns)?
            .into_iter()
            .map(|child| {
                let name = child.components().last().cloned().unwrap_or_default();
                (name, Node::Namespace(child))
            })
            .collect())
    }

    pub(super) fn list_type(
        &self,
        ns: &BackupNamespace,
        ty: BackupType,
    ) -> Result<Vec<(String, Node)>> {
        Ok(self
            .ds
            .list_groups(ns)?
            .into_iter()
            .filter(|g| g.ty == ty)
            .map(|g| (g.id.clone(), Node::Group(g)))
            .collect())
    }

    pub(super) fn list_group(&self, g: &BackupGroup) -> Result<Vec<(String, Node)>> {
        let l = self.group_listing(g)?;
        let mut out = vec![(NOTES.to_string(), Node::GroupNotes(g.clone()))];
        if l.owner {
            out.push((GROUP_OWNER.to_string(), Node::GroupOwner(g.clone())));
        }
        if let Some(last) = l.last_finished() {
            out.push((LATEST.to_string(), Node::Latest(g.clone(), last.time)));
        }
        // Listing a group is what comes before listing its snapshots (`ls -lR`): their
        // manifests are read ahead now (`warm.rs`), every time, as the page cache may
        // have dropped what an earlier listing read.
        let path = self.ds.group_path(g);
        for s in l.snaps.iter().filter(|s| s.finished) {
            let d = BackupDir::new(g.clone(), s.time)?;
            self.warmer.queue(path.join(d.time_string()));
            out.push((d.time_string(), Node::Snapshot(d, s.ino)));
        }
        Ok(out)
    }

    pub(super) fn list_snapshot(&self, d: &BackupDir) -> Result<Vec<(String, Node)>> {
        let mut out = vec![
            (NOTES.to_string(), Node::SnapNotes(d.clone())),
            (VERIFY_STATE.to_string(), Node::VerifyState(d.clone())),
            (MANIFEST_JSON.to_string(), Node::ManifestJson(d.clone())),
        ];
        out.extend(self.list_archives(d)?);
        Ok(out)
    }

    pub(super) fn lookup_in_namespace(
        &self,
        ns: &BackupNamespace,
        name: &str,
    ) -> Result<Option<Node>> {
        if name == "ns" {
            return Ok(
                (!self.ds.list_child_namespaces(ns)?.is_empty()).then(|| Node::NsDir(ns.clone()))
            );
        }
        Ok(match BackupType::parse(name) {
            Ok(ty) => self
                .ds
                .fs()
                .is_dir(&self.ds.ns_path(ns).join(ty.as_str()))
                .then(|| Node::TypeDir(ns.clone(), ty)),
            Err(_) => None,
        })
    }

    pub(super) fn lookup_child_namespace(
        &self,
        ns: &BackupNamespace,
        name: &str,
    ) -> Result<Option<Node>> {
        Ok(match ns.child(name) {
            Ok(child) if self.ds.fs().is_dir(&self.ds.ns_path(&child)) => {
                Some(Node::Namespace(child))
            }
            _ => None,
        })
    }

    pub(super) fn lookup_group(
        &self,
        ns: &BackupNamespace,
        ty: BackupType,
        name: &str,
    ) -> Result<Option<Node>> {
        Ok(match BackupGroup::new(ns.clone(), ty, name) {
            Ok(g) if self.ds.fs().is_dir(&self.ds.group_path(&g)) => Some(Node::Group(g)),
            _ => None,
        })
    }

    pub(super) fn lookup_in_group(&self, g: &BackupGroup, name: &str) -> Result<Option<Node>> {
        if name == NOTES {
            return Ok(Some(Node::GroupNotes(g.clone())));
        }
        let l = self.group_listing(g)?;
        Ok(match name {
            GROUP_OWNER => l.owner.then(|| Node::GroupOwner(g.clone())),
            LATEST => l.last_finished().map(|s| Node::Latest(g.clone(), s.time)),
            _ => crate::util::time::parse_snapshot_time(name)
                .and_then(|t| l.at(t).filter(|s| s.finished))
                .and_then(|s| {
                    let d = BackupDir::new(g.clone(), s.time).ok()?;
                    Some(Node::Snapshot(d, s.ino))
                }),
        })
    }

    pub(super) fn lookup_in_snapshot(&self, d: &BackupDir, name: &str) -> Result<Option<Node>> {
        Ok(match name {
            NOTES => Some(Node::SnapNotes(d.clone())),
            VERIFY_STATE => Some(Node::VerifyState(d.clone())),
            MANIFEST_JSON => Some(Node::ManifestJson(d.clone())),
            _ => self.lookup_archive(d, name)?,
        })
    }

    /// Attributes of folders, `owner` and `latest`.
    pub(super) fn tree_attr(&self, node: &Node) -> Result<Attr> {
        let ds = &self.ds;
        Ok(match node {
            Node::Namespace(ns) => attr_from_md(
                Kind::Dir,
                &self.ds.fs().metadata(&ds.ns_path(ns))?,
                0o755,
                0,
            ),
            Node::NsDir(ns) => attr_from_md(
                Kind::Dir,
                &self.ds.fs().metadata(&ds.ns_path(ns).join("ns"))?,
                0o755,
                0,
            ),
            Node::TypeDir(ns, ty) => attr_from_md(
                Kind::Dir,
                &self.ds.fs().metadata(&ds.ns_path(ns).join(ty.as_str()))?,
                0o755,
                0,
            ),
            Node::Group(g) => {
                let l = self.group_listing(g)?;
                Attr {
                    ino: 0,
                    kind: Kind::Dir,
                    size: 0,
                    perm: 0o755,
                    uid: l.uid,
                    gid: l.gid,
                    mtime: l.last_finished().map_or(l.mtime, |s| systime(s.time, 0)),
                    nlink: 2,
                    rdev: 0,
                }
            }
            Node::GroupOwner(g) => {
                let md = self.ds.fs().metadata(&ds.group_path(g).join(GROUP_OWNER))?;
                attr_from_md(Kind::File, &md, 0o444, md.len())
            }
            Node::Latest(g, time) => {
                let l = self.group_listing(g)?;
                Attr {
                    ino: 0,
                    kind: Kind::Symlink,
                    // A snapshot folder name is always 20 bytes (spec §1.5).
                    size: 20,
                    perm: 0o777,
                    uid: l.uid,
                    gid: l.gid,
                    mtime: systime(*time, 0),
                    nlink: 1,
                    rdev: 0,
                }
            }
            Node::Snapshot(d, folder_ino) => {
                let l = self.group_listing(&d.group)?;
                let Some(s) = l.at(d.time).filter(|s| s.ino == *folder_ino) else {
                    // Forgotten (and maybe made again): this inode's snapshot is gone.
                    return Err(Error::not_found(format!("snapshot {d} of this inode")));
                };
                Attr {
                    ino: 0,
                    kind: Kind::Dir,
                    size: 0,
                    perm: 0o755,
                    uid: s.uid,
                    gid: s.gid,
                    mtime: systime(d.time, 0),
                    nlink: 2,
                    rdev: 0,
                }
            }
            other => {
                return Err(Error::invalid(
                    other.describe(),
                    "not a folder, owner or latest node",
                ))
            }
        })
    }
}
