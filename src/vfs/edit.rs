//! Changing the view: setattr (truncation of metadata files, attributes of scratch
//! files; every other mode, owner and time is fixed), create, unlink and rename. Only
//! scratch files come and go; `notes` and `verify_state` change content only (a rename
//! of a scratch file over one is a save), and are never removed or renamed away (EPERM,
//! so editors save in place).

use std::ffi::OsStr;

use crate::util::error::{Error, Result};

use super::meta::MetaFile;
use super::node::Node;
use super::{bad_handle, Caller, Entry, Handle, Opened, SetAttr, Vfs};

impl Vfs {
    pub fn setattr(
        &self,
        ino: u64,
        fh: Option<u64>,
        set: SetAttr,
        caller: Caller,
    ) -> Result<Entry> {
        let node = self.node(ino)?;
        let changes = set.size.is_some()
            || set.mode.is_some()
            || set.uid.is_some()
            || set.gid.is_some()
            || set.atime.is_some()
            || set.mtime.is_some();
        if changes {
            self.check_rw()?;
        }
        match &node {
            Node::SnapNotes(_) | Node::VerifyState(_) | Node::GroupNotes(_) => {
                let f = MetaFile::from_node(&node).expect("a metadata node");
                // Checked first: a refused setattr truncates nothing either.
                self.check_fixed_attrs(&node, &set)?;
                if let Some(size) = set.size {
                    self.truncate_meta(&f, fh, size, caller)?;
                }
            }
            Node::Scratch(id) => {
                let file = self
                    .scratch
                    .get(*id)
                    .ok_or_else(|| Error::not_found(node.describe()))?;
                let mut f = file.lock();
                if let Some(size) = set.size {
                    f.truncate(size)?;
                }
                if let Some(mode) = set.mode {
                    f.mode = mode & 0o7777;
                }
                if let Some(uid) = set.uid {
                    f.uid = uid;
                }
                if let Some(gid) = set.gid {
                    f.gid = gid;
                }
                if let Some(t) = set.mtime {
                    f.mtime = t;
                }
            }
            _ => {
                if set.size.is_some() {
                    return Err(self.not_writable("this file"));
                }
                self.check_fixed_attrs(&node, &set)?;
            }
        }
        self.entry(&node)
    }

    /// Modes, owners and times of everything but scratch files are fixed: they come
    /// from the datastore (a metadata file's mtime is its last save's) or are made up
    /// by the view. A setattr asking for the mode or owner `stat` already shows
    /// changes nothing and succeeds (vim's fchmod and emacs' chmod after a save, mg's
    /// fchown: editor-saves.md); another value, or any time (`touch`, `touch -d`,
    /// futimens), fails with EPERM, logged with the file and the reason, so chmod,
    /// chown and touch never report a change that did not happen. Every editor
    /// carries on after that EPERM (editor-saves.md, policy pF).
    fn check_fixed_attrs(&self, node: &Node, set: &SetAttr) -> Result<()> {
        let why = if set.atime.is_some() || set.mtime.is_some() {
            Some(match node {
                Node::SnapNotes(_) | Node::VerifyState(_) | Node::GroupNotes(_) => {
                    "its times cannot be set: they are those of its last save".to_string()
                }
                _ => "its times cannot be set: they come from the datastore".to_string(),
            })
        } else if set.mode.is_none() && set.uid.is_none() && set.gid.is_none() {
            None
        } else {
            let cur = self.attr_of(node)?;
            let perm = u32::from(cur.perm);
            match (set.mode.map(|m| m & 0o7777), set.uid, set.gid) {
                (Some(m), _, _) if m != perm => Some(format!(
                    "its mode cannot become {m:04o}: it stays {perm:04o}"
                )),
                (_, Some(u), _) if u != cur.uid => Some(format!(
                    "its owner cannot become uid {u}: it stays uid {} (from the datastore)",
                    cur.uid
                )),
                (_, _, Some(g)) if g != cur.gid => Some(format!(
                    "its group cannot become gid {g}: it stays gid {} (from the datastore)",
                    cur.gid
                )),
                _ => None,
            }
        };
        match why {
            None => Ok(()),
            Some(why) => {
                let e = Error::NotPermitted {
                    what: node.describe(),
                    why,
                };
                log::info!("setattr refused: {e}");
                Err(e)
            }
        }
    }

    /// Truncation of a metadata file: through its handle; without one, on the caller's
    /// open write handles, else as a save of its own, committed at once.
    fn truncate_meta(
        &self,
        f: &MetaFile,
        fh: Option<u64>,
        size: u64,
        caller: Caller,
    ) -> Result<()> {
        let targets: Vec<_> = match fh {
            Some(fh) => match self.meta_of(fh)? {
                Some(m) => vec![m],
                None => return Err(bad_handle(fh)),
            },
            None => self
                .meta_handles(f)
                .into_iter()
                .filter(|m| {
                    let st = m.lock();
                    st.h.writable && st.h.pid == caller.pid
                })
                .collect(),
        };
        if targets.is_empty() {
            let mut content = self.meta_committed(f)?;
            content.resize(size as usize, 0);
            return self.meta_commit(f, &content);
        }
        for m in targets {
            let mut st = m.lock();
            st.flushed = false;
            st.h.truncate(size)?;
        }
        Ok(())
    }

    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<(Entry, Opened)> {
        self.check_rw()?;
        let p = self.node(parent)?;
        if self.lookup_real(&p, name)?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("{name:?}"),
            });
        }
        if !p.holds_scratch() {
            // Only snapshot and group folders take new (scratch) files.
            return Err(Error::AccessDenied { what: p.describe() });
        }
        let file = self.scratch.create(
            parent,
            name,
            mode & 0o7777,
            caller.uid,
            caller.gid,
            flags & libc::O_EXCL != 0,
        )?;
        if flags & libc::O_TRUNC != 0 {
            file.lock().truncate(0)?;
        }
        let id = file.lock().id;
        let fh = self.add_handle(Handle::Scratch {
            file,
            append: flags & libc::O_APPEND != 0,
            writable: true,
        });
        let entry = self.entry_counted(&Node::Scratch(id))?;
        Ok((
            entry,
            Opened {
                fh,
                direct_io: true,
                keep_cache: false,
            },
        ))
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.check_rw()?;
        let p = self.node(parent)?;
        if self.lookup_real(&p, name)?.is_some() {
            return Err(Error::NotPermitted {
                what: format!("{name:?}"),
                why: "cannot be removed (truncate notes to clear them)".into(),
            });
        }
        if p.holds_scratch() && self.scratch.unlink(parent, name).is_some() {
            return Ok(());
        }
        Err(Error::not_found(format!("{name:?}")))
    }

    /// `flags`: `RENAME_NOREPLACE` and `RENAME_EXCHANGE` as in renameat2.
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.check_rw()?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(Error::invalid("rename", "RENAME_EXCHANGE is not supported"));
        }
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        let p = self.node(parent)?;
        if self.lookup_real(&p, name)?.is_some() {
            return Err(Error::NotPermitted {
                what: format!("{name:?}"),
                why: "cannot be renamed".into(),
            });
        }
        let src = if p.holds_scratch() {
            self.scratch.lookup(parent, name)
        } else {
            None
        }
        .ok_or_else(|| Error::not_found(format!("{name:?}")))?;
        let np = self.node(new_parent)?;
        match self.lookup_real(&np, new_name)? {
            Some(target) => {
                if noreplace {
                    return Err(Error::AlreadyExists {
                        what: format!("{new_name:?}"),
                    });
                }
                let Some(f) = MetaFile::from_node(&target) else {
                    return Err(Error::NotPermitted {
                        what: format!("{new_name:?}"),
                        why: "cannot be replaced".into(),
                    });
                };
                // A save by rename: the scratch content becomes the new value (it
                // supersedes pending truncations, as an O_TRUNC open does).
                let content = src.lock().data().to_vec();
                self.meta_commit(&f, &content)?;
                self.scratch.unlink(parent, name);
                Ok(())
            }
            None => {
                if !np.holds_scratch() {
                    // Scratch files live only in snapshot and group folders.
                    return Err(Error::AccessDenied {
                        what: np.describe(),
                    });
                }
                self.scratch
                    .rename(parent, name, new_parent, new_name, noreplace)
            }
        }
    }
}
