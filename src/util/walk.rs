//! A depth-first walk over a tree given as lists of children, handing each entry over
//! with its slash-joined path: the shape of every "list an archive" and "list a
//! catalog" command. Untrusted trees may be deep (a catalog of a megabyte can nest tens
//! of thousands of levels), so the walk holds an explicit stack, not the thread's, and
//! one path buffer cut back as it climbs: memory grows with the depth, never with the
//! sum of the paths of every level (which a per-level copy of the path would make
//! quadratic).

use super::error::Result;

/// Walk the entries of `top` and, depth first, of every list `children` returns (an
/// entry without children: `None`), calling `f` with each entry's path (names joined by
/// `/`, no leading slash) before its children. Stops at the first error.
pub fn walk_tree<E, I, N, C, F>(top: I, name: N, mut children: C, mut f: F) -> Result<()>
where
    I: Iterator<Item = E>,
    N: for<'a> Fn(&'a E) -> &'a [u8],
    C: FnMut(&E) -> Result<Option<I>>,
    F: FnMut(&[u8], &E) -> Result<()>,
{
    let mut path = Vec::new();
    // (length of the parent's path, its children not walked yet)
    let mut stack = vec![(0usize, top)];
    while let Some((base, iter)) = stack.last_mut() {
        let base = *base;
        let Some(e) = iter.next() else {
            stack.pop();
            continue;
        };
        path.truncate(base);
        if base > 0 {
            path.push(b'/');
        }
        path.extend_from_slice(name(&e));
        f(&path, &e)?;
        if let Some(c) = children(&e)? {
            stack.push((path.len(), c));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Node {
        name: Vec<u8>,
        kids: Vec<usize>,
    }

    fn name(n: &(usize, Vec<u8>)) -> &[u8] {
        &n.1
    }

    fn walk(nodes: &[Node], top: &[usize]) -> Vec<String> {
        let list = |ids: &[usize]| -> std::vec::IntoIter<(usize, Vec<u8>)> {
            ids.iter()
                .map(|&i| (i, nodes[i].name.clone()))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let mut out = Vec::new();
        walk_tree(
            list(top),
            name,
            |e| Ok((!nodes[e.0].kids.is_empty()).then(|| list(&nodes[e.0].kids))),
            |p, _| {
                out.push(String::from_utf8_lossy(p).into_owned());
                Ok(())
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn paths_are_joined_depth_first_in_list_order() {
        let n = |name: &str, kids: Vec<usize>| Node {
            name: name.into(),
            kids,
        };
        // 0: a/ (1: b/ (3: c), 2: d), 4: e
        let nodes = vec![
            n("a", vec![1, 2]),
            n("b", vec![3]),
            n("d", vec![]),
            n("c", vec![]),
            n("e", vec![]),
        ];
        assert_eq!(walk(&nodes, &[0, 4]), ["a", "a/b", "a/b/c", "a/d", "e"]);
    }

    /// 50,000 levels of 200-byte names: one path buffer holds at most 10 MB; a copy per
    /// level would allocate about 250 GB.
    #[test]
    fn a_deep_tree_costs_memory_linear_in_its_depth() {
        const DEPTH: usize = 50_000;
        let mut seen = 0usize;
        let mut longest = 0usize;
        walk_tree(
            std::iter::once((0usize, vec![b'x'; 200])),
            name,
            |e| Ok((e.0 + 1 < DEPTH).then(|| std::iter::once((e.0 + 1, vec![b'x'; 200])))),
            |p, _| {
                seen += 1;
                longest = longest.max(p.len());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, DEPTH);
        assert_eq!(longest, DEPTH * 201 - 1);
    }

    #[test]
    fn the_first_error_stops_the_walk() {
        let mut calls = 0;
        let r = walk_tree(
            vec![(0usize, b"a".to_vec()), (1, b"b".to_vec())].into_iter(),
            name,
            |_| Ok(None),
            |_, _| {
                calls += 1;
                Err(crate::util::error::Error::invalid("x", "stop"))
            },
        );
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
