//! A small pxar writer for the decoder's tests, independent of the encoder: every item
//! emitted by hand, children in the order given (so tests can write them unsorted), and
//! the positions of each entry's parts recorded so tests can corrupt exact bytes.

use std::collections::HashMap;

use super::{Buf, WHAT};
use crate::pxar::decoder::*;
use crate::pxar::format::*;
use crate::util::error::Result;

#[derive(Debug, Clone, Default)]
pub struct Attrs {
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub acl: Acl,
    pub fcaps: Option<Vec<u8>>,
    pub projid: Option<u64>,
    /// Raw items written after the others (for bad input).
    pub raw: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Clone)]
pub enum Link {
    /// To the entry at this path key ("/a/b"), written before.
    To(&'static str),
    /// A raw distance back from the link's FILENAME.
    Back(u64),
}

#[derive(Debug, Clone)]
pub enum Body {
    Dir(Vec<N>),
    File(Vec<u8>),
    Symlink(Vec<u8>),
    Hardlink(Link),
    Device(u64, u64),
    /// Fifo or socket: nothing after the attributes.
    Special,
}

#[derive(Debug, Clone)]
pub struct N {
    pub name: Vec<u8>,
    pub stat: Stat,
    pub attrs: Attrs,
    pub body: Body,
}

pub fn stat(mode: u64) -> Stat {
    Stat {
        mode,
        flags: 0,
        uid: 1000,
        gid: 100,
        mtime_secs: 1_700_000_000,
        mtime_nanos: 123_456_789,
    }
}

fn n(name: &str, mode: u64, body: Body) -> N {
    N {
        name: name.as_bytes().to_vec(),
        stat: stat(mode),
        attrs: Attrs::default(),
        body,
    }
}

pub fn dir(name: &str, children: Vec<N>) -> N {
    n(name, S_IFDIR | 0o755, Body::Dir(children))
}

pub fn file(name: &str, data: &[u8]) -> N {
    n(name, S_IFREG | 0o644, Body::File(data.to_vec()))
}

pub fn symlink(name: &str, target: &str) -> N {
    n(
        name,
        S_IFLNK | 0o777,
        Body::Symlink(target.as_bytes().to_vec()),
    )
}

pub fn hardlink(name: &str, to: Link) -> N {
    n(name, 0, Body::Hardlink(to))
}

pub fn device(name: &str, mode: u64, major: u64, minor: u64) -> N {
    n(name, mode, Body::Device(major, minor))
}

pub fn special(name: &str, mode: u64) -> N {
    n(name, mode, Body::Special)
}

#[derive(Clone)]
pub struct Opts {
    pub v2: bool,
    pub prelude: Option<Vec<u8>>,
    /// File bytes go to a payload stream, PAYLOAD_REF in the metadata.
    pub split: bool,
    /// A split file's goodbye size counts its payload (pxar's `create_file`).
    pub payload_in_size: bool,
    pub entry_v1: bool,
    /// The root's goodbye tail points to its ENTRY rather than the stream start.
    pub root_tail_to_entry: bool,
    pub hasher: fn(&[u8]) -> u64,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            v2: false,
            prelude: None,
            split: false,
            payload_in_size: false,
            entry_v1: false,
            root_tail_to_entry: false,
            hasher: hash,
        }
    }
}

/// Where the parts of an entry were written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pos {
    pub filename: u64,
    pub entry: u64,
    /// The first item after the ENTRY (an attribute or the content).
    pub attrs: u64,
    /// The content item (PAYLOAD, SYMLINK, ...; a directory's first child).
    pub content: u64,
    pub goodbye: u64,
}

pub struct Built {
    pub meta: Vec<u8>,
    /// Every item header written to `meta`.
    pub headers: Vec<u64>,
    pub payload: Option<Vec<u8>>,
    pub at: HashMap<String, Pos>,
}

impl Built {
    pub fn open(&self) -> Result<Archive<Buf>> {
        Archive::open(
            Buf::new(self.meta.clone()),
            self.payload.clone().map(Buf::new),
            WHAT,
        )
    }

    /// Open with the hasher the archive was built with.
    pub fn open_with(&self, hasher: fn(&[u8]) -> u64) -> Result<Archive<Buf>> {
        let mut ar = self.open()?;
        ar.hasher = hasher;
        Ok(ar)
    }

    pub fn pos(&self, key: &str) -> Pos {
        self.at[key]
    }

    /// The offset of the goodbye item of `dir` that points to its child `key`.
    pub fn item_of(&self, dir: &str, key: &str) -> u64 {
        let gb = self.pos(dir).goodbye;
        let dist = gb - self.pos(key).filename;
        let mut at = gb + 16;
        while get(&self.meta, at) != GOODBYE_TAIL_MARKER {
            if get(&self.meta, at + 8) == dist {
                return at;
            }
            at += 24;
        }
        panic!("no goodbye item for {key}");
    }
}

pub fn get(b: &[u8], at: u64) -> u64 {
    u64::from_le_bytes(b[at as usize..at as usize + 8].try_into().unwrap())
}

pub fn put(b: &mut [u8], at: u64, v: u64) {
    b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

struct W {
    out: Vec<u8>,
    headers: Vec<u64>,
    payload: Vec<u8>,
    opts: Opts,
    at: HashMap<String, Pos>,
}

impl W {
    fn pos(&self) -> u64 {
        self.out.len() as u64
    }

    fn item(&mut self, htype: u64, content: &[u8]) {
        self.headers.push(self.pos());
        self.out.extend_from_slice(&htype.to_le_bytes());
        self.out
            .extend_from_slice(&(16 + content.len() as u64).to_le_bytes());
        self.out.extend_from_slice(content);
    }

    fn u64s(v: &[u64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn child(&mut self, c: &N, parent: &str) -> (u64, u64) {
        let key = format!("{parent}/{}", String::from_utf8_lossy(&c.name));
        let start = self.pos();
        let mut name = c.name.clone();
        name.push(0);
        self.item(FILENAME, &name);
        if let Body::Hardlink(link) = &c.body {
            let dist = match link {
                Link::To(k) => start - self.at[*k].filename,
                Link::Back(d) => *d,
            };
            let mut v = dist.to_le_bytes().to_vec();
            v.extend_from_slice(b"target/path\0");
            self.item(HARDLINK, &v);
            self.at.insert(
                key,
                Pos {
                    filename: start,
                    ..Pos::default()
                },
            );
            return (start, self.pos() - start);
        }
        let extra = self.entry(c, &key, start);
        (start, self.pos() - start + extra)
    }

    /// ENTRY, attributes, content; returns payload bytes counted in the goodbye size.
    fn entry(&mut self, e: &N, key: &str, filename: u64) -> u64 {
        let entry = self.pos();
        let s = &e.stat;
        if self.opts.entry_v1 {
            let ns = s.mtime_secs as u64 * 1_000_000_000 + s.mtime_nanos as u64;
            let mut b = Self::u64s(&[s.mode, s.flags]);
            b.extend_from_slice(&s.uid.to_le_bytes());
            b.extend_from_slice(&s.gid.to_le_bytes());
            b.extend_from_slice(&ns.to_le_bytes());
            self.item(ENTRY_V1, &b);
        } else {
            self.item(ENTRY, &s.to_bytes());
        }
        let attrs = self.pos();
        let a = &e.attrs;
        for (k, v) in &a.xattrs {
            let mut b = k.clone();
            b.push(0);
            b.extend_from_slice(v);
            self.item(XATTR, &b);
        }
        for u in &a.acl.users {
            self.item(ACL_USER, &Self::u64s(&[u.uid, u.perms]));
        }
        for g in &a.acl.groups {
            self.item(ACL_GROUP, &Self::u64s(&[g.gid, g.perms]));
        }
        if let Some(p) = a.acl.group_obj {
            self.item(ACL_GROUP_OBJ, &Self::u64s(&[p]));
        }
        if let Some(d) = a.acl.default {
            self.item(
                ACL_DEFAULT,
                &Self::u64s(&[d.user_obj, d.group_obj, d.other, d.mask]),
            );
        }
        for u in &a.acl.default_users {
            self.item(ACL_DEFAULT_USER, &Self::u64s(&[u.uid, u.perms]));
        }
        for g in &a.acl.default_groups {
            self.item(ACL_DEFAULT_GROUP, &Self::u64s(&[g.gid, g.perms]));
        }
        if let Some(f) = &a.fcaps {
            self.item(FCAPS, f);
        }
        if let Some(p) = a.projid {
            self.item(QUOTA_PROJID, &Self::u64s(&[p]));
        }
        for (t, c) in &a.raw {
            self.item(*t, c);
        }
        let content = self.pos();
        let mut pos = Pos {
            filename,
            entry,
            attrs,
            content,
            goodbye: 0,
        };
        let mut extra = 0;
        match &e.body {
            Body::Dir(children) => {
                let mut items = Vec::new();
                for c in children {
                    let (start, size) = self.child(c, key);
                    items.push(GoodbyeItem {
                        hash: (self.opts.hasher)(&c.name),
                        offset: start,
                        size,
                    });
                }
                let gb = self.pos();
                let n = items.len() as u64;
                for it in &mut items {
                    it.offset = gb - it.offset;
                }
                let mut b = Vec::new();
                for it in goodbye_table(items) {
                    b.extend_from_slice(&it.to_bytes());
                }
                let back = if key.is_empty() && !self.opts.root_tail_to_entry {
                    gb
                } else {
                    gb - entry
                };
                let tail = GoodbyeItem {
                    hash: GOODBYE_TAIL_MARKER,
                    offset: back,
                    size: 16 + 24 * (n + 1),
                };
                b.extend_from_slice(&tail.to_bytes());
                self.item(GOODBYE, &b);
                pos.goodbye = gb;
            }
            Body::File(data) if self.opts.split => {
                let off = self.payload.len() as u64;
                self.payload.extend_from_slice(&PAYLOAD.to_le_bytes());
                self.payload
                    .extend_from_slice(&(16 + data.len() as u64).to_le_bytes());
                self.payload.extend_from_slice(data);
                self.item(PAYLOAD_REF, &Self::u64s(&[off, data.len() as u64]));
                if self.opts.payload_in_size {
                    extra = data.len() as u64;
                }
            }
            Body::File(data) => self.item(PAYLOAD, data),
            Body::Symlink(t) => {
                let mut b = t.clone();
                b.push(0);
                self.item(SYMLINK, &b);
            }
            Body::Device(major, minor) => self.item(DEVICE, &Self::u64s(&[*major, *minor])),
            Body::Special | Body::Hardlink(_) => {}
        }
        self.at.insert(key.to_string(), pos);
        extra
    }
}

/// Write `root` as an archive.
pub fn build(root: &N, opts: Opts) -> Built {
    let mut w = W {
        out: Vec::new(),
        headers: Vec::new(),
        payload: Vec::new(),
        opts,
        at: HashMap::new(),
    };
    if w.opts.split {
        w.payload
            .extend_from_slice(&PAYLOAD_START_MARKER.to_le_bytes());
        w.payload.extend_from_slice(&16u64.to_le_bytes());
    }
    if w.opts.v2 {
        w.item(FORMAT_VERSION, &2u64.to_le_bytes());
        if let Some(p) = w.opts.prelude.clone() {
            w.item(PRELUDE, &p);
        }
    }
    w.entry(root, "", 0);
    let payload = w.opts.split.then(|| {
        w.payload
            .extend_from_slice(&PAYLOAD_TAIL_MARKER.to_le_bytes());
        w.payload.extend_from_slice(&16u64.to_le_bytes());
        w.payload
    });
    Built {
        meta: w.out,
        headers: w.headers,
        payload,
        at: w.at,
    }
}
