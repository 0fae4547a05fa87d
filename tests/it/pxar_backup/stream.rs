//! A small, strict walker of single-stream pxar archives for the backup tests, written
//! from spec §7.1 independently of the encoder: every item in order, names sorted,
//! each goodbye table compared with the one the spec's rules give, hardlinks resolved.

use std::collections::BTreeMap;

use pbsfs::pxar::format::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Content at `stream[at..at + len]`.
    File {
        at: usize,
        len: usize,
    },
    Dir,
    Symlink(Vec<u8>),
    Device(u64, u64),
    /// FIFO or socket (no content item).
    Special,
    /// A second name: the target's path and the FILENAME it points back to.
    Hardlink {
        target: Vec<u8>,
        target_at: u64,
    },
}

#[derive(Debug, Clone)]
pub struct Node {
    pub stat: Stat,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every ACL item: (htype, its u64 fields).
    pub acl: Vec<(u64, Vec<u64>)>,
    pub fcaps: Option<Vec<u8>>,
    pub kind: Kind,
    /// Offset of the entry's FILENAME (0 for the root).
    pub filename_at: u64,
}

/// Paths from the archive root without a leading `/` (`""` is the root).
pub type Tree = BTreeMap<Vec<u8>, Node>;

fn header(s: &[u8], at: usize) -> Header {
    assert!(at + 16 <= s.len(), "header at {at} runs past the stream");
    Header::parse(s[at..at + 16].try_into().unwrap())
}

fn u64s(b: &[u8]) -> Vec<u64> {
    b.chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Parse an ENTRY and its attributes at `at`; returns the node and the next offset.
fn metadata(s: &[u8], mut at: usize, filename_at: u64) -> (Node, usize) {
    let h = header(s, at);
    assert_eq!(h.htype, ENTRY, "ENTRY expected at {at}");
    assert_eq!(h.full_size, 56);
    let stat = Stat::parse(&s[at + 16..at + 56], false).expect("valid ENTRY");
    at += 56;
    let mut node = Node {
        stat,
        xattrs: Vec::new(),
        acl: Vec::new(),
        fcaps: None,
        kind: Kind::Special,
        filename_at,
    };
    // Attribute order of spec §7.1: each kind's rank may only grow.
    let rank = |t: u64| match t {
        XATTR => Some(0),
        ACL_USER => Some(1),
        ACL_GROUP => Some(2),
        ACL_GROUP_OBJ => Some(3),
        ACL_DEFAULT => Some(4),
        ACL_DEFAULT_USER => Some(5),
        ACL_DEFAULT_GROUP => Some(6),
        FCAPS => Some(7),
        QUOTA_PROJID => Some(8),
        _ => None,
    };
    let mut last = 0;
    while at < s.len() {
        let h = header(s, at);
        let Some(r) = rank(h.htype) else { break };
        assert!(r >= last, "attribute out of order at {at}");
        assert!(
            r != last || r == 0 || matches!(r, 1 | 2 | 5 | 6),
            "repeated item at {at}"
        );
        last = r;
        let body = &s[at + 16..at + h.full_size as usize];
        match h.htype {
            XATTR => {
                let nul = body.iter().position(|b| *b == 0).expect("xattr NUL");
                node.xattrs
                    .push((body[..nul].to_vec(), body[nul + 1..].to_vec()));
            }
            FCAPS => node.fcaps = Some(body.to_vec()),
            QUOTA_PROJID => {}
            t => node.acl.push((t, u64s(body))),
        }
        at += h.full_size as usize;
    }
    (node, at)
}

struct Open {
    path: Vec<u8>,
    entry_at: u64,
    filename_at: u64,
    /// (name, FILENAME offset, end offset) of each child, in stream order.
    children: Vec<(Vec<u8>, u64, u64)>,
}

fn check_goodbye(s: &[u8], at: usize, dir: &Open, root: bool) -> usize {
    let h = header(s, at);
    assert_eq!(h.htype, GOODBYE);
    let n = dir.children.len();
    assert_eq!(
        h.full_size,
        16 + 24 * (n as u64 + 1),
        "goodbye size at {at}"
    );
    let items: Vec<GoodbyeItem> = dir
        .children
        .iter()
        .map(|(name, fname, end)| GoodbyeItem {
            hash: hash(name),
            offset: at as u64 - fname,
            size: end - fname,
        })
        .collect();
    let mut want = Vec::new();
    for it in goodbye_table(items) {
        want.extend_from_slice(&it.to_bytes());
    }
    let tail = GoodbyeItem {
        hash: GOODBYE_TAIL_MARKER,
        offset: at as u64 - if root { 0 } else { dir.entry_at },
        size: h.full_size,
    };
    want.extend_from_slice(&tail.to_bytes());
    assert_eq!(
        &s[at + 16..at + h.full_size as usize],
        &want[..],
        "goodbye table of {:?}",
        String::from_utf8_lossy(&dir.path)
    );
    for w in dir.children.windows(2) {
        assert!(w[0].0 < w[1].0, "names not sorted: {:?}", w);
    }
    at + h.full_size as usize
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Walk a whole stream, checking its structure; panics on any deviation.
pub fn parse(s: &[u8]) -> Tree {
    let mut tree = Tree::new();
    let (mut root, mut at) = metadata(s, 0, 0);
    assert!(root.stat.is_dir(), "the root is a directory");
    root.kind = Kind::Dir;
    tree.insert(Vec::new(), root);
    let mut stack = vec![Open {
        path: Vec::new(),
        entry_at: 0,
        filename_at: 0,
        children: Vec::new(),
    }];
    loop {
        let h = header(s, at);
        if h.htype == GOODBYE {
            let dir = stack.pop().unwrap();
            at = check_goodbye(s, at, &dir, stack.is_empty());
            let Some(parent) = stack.last_mut() else {
                break;
            };
            let name = dir.path.rsplit(|b| *b == b'/').next().unwrap().to_vec();
            parent.children.push((name, dir.filename_at, at as u64));
            continue;
        }
        assert_eq!(h.htype, FILENAME, "FILENAME or GOODBYE expected at {at}");
        let fname_at = at as u64;
        let name = s[at + 16..at + h.full_size as usize - 1].to_vec();
        assert_eq!(s[at + h.full_size as usize - 1], 0);
        at += h.full_size as usize;
        let path = join(&stack.last().unwrap().path, &name);
        let h2 = header(s, at);
        if h2.htype == HARDLINK {
            let body = &s[at + 16..at + h2.full_size as usize];
            let back = u64::from_le_bytes(body[..8].try_into().unwrap());
            let target = body[8..body.len() - 1].to_vec();
            assert_eq!(*body.last().unwrap(), 0);
            let target_at = fname_at - back;
            let t = tree.get(&target).expect("hardlink target decoded before");
            assert_eq!(t.filename_at, target_at, "hardlink offset of {path:?}");
            let mut node = t.clone();
            node.kind = Kind::Hardlink { target, target_at };
            node.filename_at = fname_at;
            tree.insert(path.clone(), node);
            at += h2.full_size as usize;
            stack
                .last_mut()
                .unwrap()
                .children
                .push((name, fname_at, at as u64));
            continue;
        }
        let entry_at = at as u64;
        let (mut node, next) = metadata(s, at, fname_at);
        at = next;
        let ft = node.stat.file_type();
        if ft == S_IFDIR {
            node.kind = Kind::Dir;
            tree.insert(path.clone(), node);
            stack.push(Open {
                path,
                entry_at,
                filename_at: fname_at,
                children: Vec::new(),
            });
            continue;
        }
        let h3 = header(s, at);
        let body = || &s[at + 16..at + h3.full_size as usize];
        node.kind = match ft {
            S_IFREG => {
                assert_eq!(h3.htype, PAYLOAD, "PAYLOAD of {path:?}");
                Kind::File {
                    at: at + 16,
                    len: h3.full_size as usize - 16,
                }
            }
            S_IFLNK => {
                assert_eq!(h3.htype, SYMLINK);
                let b = body();
                assert_eq!(*b.last().unwrap(), 0);
                Kind::Symlink(b[..b.len() - 1].to_vec())
            }
            S_IFCHR | S_IFBLK => {
                assert_eq!(h3.htype, DEVICE);
                let v = u64s(body());
                Kind::Device(v[0], v[1])
            }
            S_IFIFO | S_IFSOCK => Kind::Special,
            other => panic!("unknown file type {other:o}"),
        };
        if !matches!(node.kind, Kind::Special) {
            at += h3.full_size as usize;
        }
        tree.insert(path, node);
        stack
            .last_mut()
            .unwrap()
            .children
            .push((name, fname_at, at as u64));
    }
    assert_eq!(at, s.len(), "the root's goodbye ends the stream");
    tree
}
