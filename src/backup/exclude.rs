//! Exclude patterns as the PBS client reads them (its `pathpatterns` crate, git's
//! wildmatch): `*` and `?` never match `/`, `**` matches across folders (`a/**/b` also
//! matches `a/b`), `[...]` classes, `\` escapes; a leading `!` includes again, a trailing
//! `/` matches directories only, the last matching pattern wins. A pattern matches the
//! entry's path from the archive root (`/etc/hosts`) or any suffix of it after a `/`
//! (`hosts`, `etc/hosts`), so a leading `/` anchors it at the root. Patterns of a
//! `.pxarexclude` file hold for its folder's subtree; a leading `/` there anchors at
//! that folder.

use crate::util::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    ranges: Vec<(u8, u8)>,
}

impl Class {
    fn matches(&self, c: u8) -> bool {
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)) != self.negated
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `?`: one byte but `/`.
    Any,
    /// `*`: any run without `/`.
    Star,
    /// `**` between slashes (or at an end): any run.
    StarStar,
    /// Before a `**` that a `/` follows: the `**/` may also be skipped whole (`a/**/b`
    /// matches `a/b`), but only before the `**` consumed anything.
    OptionalDirs,
    /// `[...]`: one byte of the class, never `/`.
    Class(Class),
}

/// Whether a matching pattern includes or excludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Include,
    Exclude,
}

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The glob as given, without `!` and trailing slashes (what `.pxarexclude-cli`
    /// records).
    text: Vec<u8>,
    tokens: Vec<Token>,
    ty: MatchType,
    dir_only: bool,
}

const NAMED: [(&str, &[(u8, u8)]); 8] = [
    ("alpha", &[(b'a', b'z'), (b'A', b'Z')]),
    ("digit", &[(b'0', b'9')]),
    ("alnum", &[(b'a', b'z'), (b'A', b'Z'), (b'0', b'9')]),
    ("upper", &[(b'A', b'Z')]),
    ("lower", &[(b'a', b'z')]),
    ("space", &[(b' ', b' '), (b'\t', b'\r')]),
    ("xdigit", &[(b'0', b'9'), (b'a', b'f'), (b'A', b'F')]),
    (
        "punct",
        &[(b'!', b'/'), (b':', b'@'), (b'[', b'`'), (b'{', b'~')],
    ),
];

fn parse_class(p: &[u8], mut i: usize, shown: &dyn Fn() -> String) -> Result<(Class, usize)> {
    let begin = i;
    i += 1;
    let negated = matches!(p.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = p.get(i) else {
            return Err(Error::invalid(
                shown(),
                format!("unclosed character class at byte {begin}"),
            ));
        };
        if c == b']' && !first {
            return Ok((Class { negated, ranges }, i));
        }
        first = false;
        if c == b'[' && p.get(i + 1) == Some(&b':') {
            let rest = &p[i + 2..];
            let end = rest.windows(2).position(|w| w == b":]");
            let named = end.and_then(|e| NAMED.iter().find(|(n, _)| n.as_bytes() == &rest[..e]));
            let (Some(e), Some((_, r))) = (end, named) else {
                return Err(Error::invalid(
                    shown(),
                    format!("unknown named class at byte {i}"),
                ));
            };
            ranges.extend_from_slice(r);
            i += 2 + e + 2;
            continue;
        }
        let mut lo = c;
        if c == b'\\' {
            i += 1;
            lo = *p
                .get(i)
                .ok_or_else(|| Error::invalid(shown(), "trailing backslash"))?;
        }
        let mut hi = lo;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|c| *c != b']') {
            i += 2;
            hi = p[i];
            if hi == b'\\' {
                i += 1;
                hi = *p
                    .get(i)
                    .ok_or_else(|| Error::invalid(shown(), "trailing backslash"))?;
            }
        }
        ranges.push((lo.min(hi), lo.max(hi)));
        i += 1;
    }
}

fn tokenize(p: &[u8], shown: &dyn Fn() -> String) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => {
                i += 1;
                let c = *p
                    .get(i)
                    .ok_or_else(|| Error::invalid(shown(), "trailing backslash"))?;
                out.push(Token::Byte(c));
            }
            b'?' => out.push(Token::Any),
            b'*' => {
                let begin = i;
                while p.get(i + 1) == Some(&b'*') {
                    i += 1;
                }
                let double = i > begin;
                let before_ok = begin == 0 || p[begin - 1] == b'/';
                let after = p.get(i + 1).copied();
                if double && before_ok && matches!(after, None | Some(b'/')) {
                    if after.is_some() {
                        out.push(Token::OptionalDirs);
                    }
                    out.push(Token::StarStar);
                } else {
                    out.push(Token::Star);
                }
            }
            b'[' => {
                let (class, end) = parse_class(p, i, shown)?;
                out.push(Token::Class(class));
                i = end;
            }
            c => out.push(Token::Byte(c)),
        }
        i += 1;
    }
    Ok(out)
}

/// Add the states reachable without input: `*` and `**` may match nothing.
fn closure(tokens: &[Token], s: &mut [bool]) {
    for i in 0..tokens.len() {
        if !s[i] {
            continue;
        }
        match tokens[i] {
            Token::Star | Token::StarStar => s[i + 1] = true,
            // Followed by `**` and `/`: into the `**`, or past both.
            Token::OptionalDirs => {
                s[i + 1] = true;
                s[i + 3] = true;
            }
            _ => {}
        }
    }
}

/// Does the whole of `text` match? A set-of-states simulation: time O(text × tokens),
/// no backtracking blow-up whatever the pattern.
fn glob_match(tokens: &[Token], text: &[u8]) -> bool {
    let n = tokens.len();
    let mut cur = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    cur[0] = true;
    closure(tokens, &mut cur);
    for &c in text {
        next.fill(false);
        for i in 0..n {
            if !cur[i] {
                continue;
            }
            match &tokens[i] {
                Token::Byte(b) if *b == c => next[i + 1] = true,
                Token::Any if c != b'/' => next[i + 1] = true,
                Token::Class(cl) if c != b'/' && cl.matches(c) => next[i + 1] = true,
                Token::Star if c != b'/' => next[i] = true,
                Token::StarStar => next[i] = true,
                _ => {}
            }
        }
        closure(tokens, &mut next);
        std::mem::swap(&mut cur, &mut next);
        if !cur.iter().any(|s| *s) {
            return false;
        }
    }
    cur[n]
}

impl Pattern {
    /// Parse one pattern: `!` includes, a trailing `/` means directories only.
    pub fn parse(arg: &[u8]) -> Result<Pattern> {
        let shown = || format!("exclude pattern {:?}", String::from_utf8_lossy(arg));
        let (body, ty) = match arg.strip_prefix(b"!") {
            Some(rest) => (rest, MatchType::Include),
            None => (arg, MatchType::Exclude),
        };
        if body.is_empty() {
            return Err(Error::invalid(shown(), "empty"));
        }
        if body.contains(&0) {
            return Err(Error::invalid(shown(), "contains a NUL byte"));
        }
        let (text, dir_only) = match body.iter().rposition(|b| *b != b'/') {
            Some(last) if last + 1 == body.len() => (body, false),
            Some(last) => (&body[..=last], true),
            None => (&b"/"[..], true),
        };
        Ok(Pattern {
            tokens: tokenize(text, &shown)?,
            text: text.to_vec(),
            ty,
            dir_only,
        })
    }

    /// Does this pattern match the entry at `path` (from the archive root, starting
    /// with `/`)?
    pub fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if glob_match(&self.tokens, path) {
            return true;
        }
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .any(|(i, _)| glob_match(&self.tokens, &path[i + 1..]))
    }

    /// The line the PBS client writes for this pattern into `.pxarexclude-cli`.
    fn cli_line(&self, out: &mut Vec<u8>) {
        if self.ty == MatchType::Include {
            out.push(b'!');
        }
        out.extend_from_slice(&self.text);
        if self.dir_only && !self.text.ends_with(b"/") {
            out.push(b'/');
        }
        out.push(b'\n');
    }
}

/// What the last matching pattern of `list` says about `path`, if any matches.
pub fn match_list(list: &[Pattern], path: &[u8], is_dir: bool) -> Option<MatchType> {
    list.iter()
        .rev()
        .find(|p| p.matches(path, is_dir))
        .map(|p| p.ty)
}

/// The content of `.pxarexclude-cli`: one line per command-line pattern.
pub fn cli_file(list: &[Pattern]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in list {
        p.cli_line(&mut out);
    }
    out
}

/// The patterns of a `.pxarexclude` file in the folder at `dir` (its path from the
/// archive root, `""` for the root, else `/a/b`): blank lines and `#` comments skipped,
/// surrounding whitespace trimmed, a leading `/` (also after `!`) anchored at the
/// folder. A bad line is reported through `warn` and skipped, as the PBS client does.
pub fn parse_pxarexclude(content: &[u8], dir: &[u8], warn: &mut dyn FnMut(Error)) -> Vec<Pattern> {
    let mut out = Vec::new();
    for line in content.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let (neg, body) = match line.strip_prefix(b"!") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let mut arg = Vec::with_capacity(dir.len() + line.len() + 1);
        if neg {
            arg.push(b'!');
        }
        if body.starts_with(b"/") {
            arg.extend_from_slice(dir);
        }
        arg.extend_from_slice(body);
        match Pattern::parse(&arg) {
            Ok(p) => out.push(p),
            Err(e) => warn(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str, dir: bool) -> bool {
        Pattern::parse(p.as_bytes())
            .unwrap()
            .matches(path.as_bytes(), dir)
    }

    #[test]
    fn globs_match_like_wildmatch() {
        assert!(m("*.log", "/var/log/syslog.log", false));
        assert!(!m("*.log", "/var/log/syslog.log.1", false));
        assert!(m("log/*.log", "/var/log/a.log", false));
        assert!(!m("/log/*.log", "/var/log/a.log", false), "anchored");
        assert!(m("/var/log", "/var/log", true));
        assert!(!m("var/*", "/var/log/a", false), "* stops at /");
        assert!(m("var/**", "/var/log/a", false));
        assert!(m("/a/**/b", "/a/b", false));
        assert!(m("/a/**/b", "/a/x/y/b", false));
        assert!(!m("/a/**/b", "/a/xb", false));
        assert!(m("**/b", "/b", false));
        assert!(m("f?o", "/x/foo", false));
        assert!(!m("f?o", "/f/o", false));
        assert!(m("[a-c]x", "/bx", false));
        assert!(!m("[!a-c]x", "/bx", false));
        assert!(m("[^a-c]x", "/dx", false));
        assert!(m("[[:digit:]]*", "/7up", false));
        assert!(m("[]]", "/]", false));
        assert!(m("a\\*", "/a*", false));
        assert!(!m("a\\*", "/ab", false));
        assert!(m("x**y", "/xay", false), "** not between slashes is *");
        assert!(!m("x**y", "/xa/y", false));
        // Names with any bytes.
        let p = Pattern::parse(b"\xff*").unwrap();
        assert!(p.matches(b"/d/\xff\xfe", false));
    }

    #[test]
    fn directory_only_negation_and_last_match_wins() {
        assert!(!m("cache/", "/a/cache", false));
        assert!(m("cache/", "/a/cache", true));
        assert!(m("cache//", "/a/cache", true));
        let list: Vec<Pattern> = ["*.tmp", "!keep.tmp", "build/"]
            .iter()
            .map(|p| Pattern::parse(p.as_bytes()).unwrap())
            .collect();
        assert_eq!(
            match_list(&list, b"/x.tmp", false),
            Some(MatchType::Exclude)
        );
        assert_eq!(
            match_list(&list, b"/d/keep.tmp", false),
            Some(MatchType::Include)
        );
        assert_eq!(match_list(&list, b"/build", true), Some(MatchType::Exclude));
        assert_eq!(match_list(&list, b"/build", false), None);
        assert_eq!(match_list(&list, b"/other", false), None);
    }

    #[test]
    fn the_cli_file_records_patterns_as_the_pbs_client_does() {
        let list: Vec<Pattern> = ["*.tmp", "!keep.tmp", "build//", "/", "!/abs/dir/"]
            .iter()
            .map(|p| Pattern::parse(p.as_bytes()).unwrap())
            .collect();
        assert_eq!(
            cli_file(&list),
            b"*.tmp\n!keep.tmp\nbuild/\n/\n!/abs/dir/\n".to_vec()
        );
    }

    #[test]
    fn pxarexclude_files_anchor_at_their_folder() {
        let mut warned = Vec::new();
        let content = b"# comment\n\n  *.o  \n/only-here\n!/only-here/keep\nbad[\n";
        let list = parse_pxarexclude(content, b"/src", &mut |e| warned.push(e));
        assert_eq!(list.len(), 3);
        assert_eq!(warned.len(), 1);
        assert!(warned[0].to_string().contains("bad["), "{}", warned[0]);
        assert_eq!(
            match_list(&list, b"/src/a/x.o", false),
            Some(MatchType::Exclude)
        );
        assert_eq!(
            match_list(&list, b"/src/only-here", true),
            Some(MatchType::Exclude)
        );
        assert_eq!(match_list(&list, b"/src/a/only-here", true), None);
        assert_eq!(
            match_list(&list, b"/src/only-here/keep", false),
            Some(MatchType::Include)
        );
    }

    #[test]
    fn bad_patterns_are_refused_naming_them() {
        for bad in ["", "!", "a[b", "x\\", "[[:nope:]]"] {
            let e = Pattern::parse(bad.as_bytes()).unwrap_err();
            assert!(matches!(e.kind(), Error::InvalidInput { .. }), "{e}");
            assert!(e.to_string().contains("exclude pattern"), "{e}");
        }
    }

    #[test]
    fn matching_stays_linear_on_hostile_patterns() {
        let p = Pattern::parse("*a*a*a*a*a*a*a*a*a*a*b".as_bytes()).unwrap();
        let text = vec![b'a'; 4000];
        let t = std::time::Instant::now();
        let mut path = b"/".to_vec();
        path.extend_from_slice(&text);
        assert!(!p.matches(&path, false));
        assert!(t.elapsed().as_secs() < 2);
    }
}
