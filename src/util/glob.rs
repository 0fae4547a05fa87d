//! Shell globs (what `pbsfs find` matches names and paths with): `*` any run without
//! `/`, `**` any run including `/`, `?` one character but `/`, `[abc]` `[a-z]` `[!x]`
//! `[^x]` one character of a class (never `/`), `\` escapes the next character; an
//! unclosed `[` is a literal, as in the shell. Matching is per character of valid UTF-8
//! (an invalid byte counts as one character of its own that no literal but itself
//! matches), optionally ignoring case (Unicode simple case folding). Time is
//! O(text × pattern) whatever the pattern (a set-of-states simulation, no backtracking).
//!
//! Not `backup::exclude`: those are gitignore rules (`!` negation, a trailing `/` for
//! folders, matching any path suffix) that `find`'s globs must not inherit, and they
//! have no case folding.

use crate::util::error::{Error, Result};

/// A character of a name: a Unicode scalar value, or `INVALID + byte` for a byte that is
/// not part of valid UTF-8 (never equal to a character).
type Unit = u32;
const INVALID: Unit = 0x11_0000;

/// Split bytes into units: characters of valid UTF-8 runs, single invalid bytes.
fn units(text: &[u8]) -> Vec<Unit> {
    let mut out = Vec::with_capacity(text.len());
    for chunk in text.utf8_chunks() {
        out.extend(chunk.valid().chars().map(|c| c as Unit));
        out.extend(chunk.invalid().iter().map(|b| INVALID + *b as Unit));
    }
    out
}

/// The simple (one character to one character) lower or upper case of a unit, or the
/// unit itself.
fn simple_case(u: Unit, upper: bool) -> Unit {
    if u < 0x80 {
        let b = u as u8;
        return if upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        } as Unit;
    }
    let Some(c) = char::from_u32(u) else {
        return u;
    };
    fn single(mut it: impl Iterator<Item = char>, u: Unit) -> Unit {
        match (it.next(), it.next()) {
            (Some(one), None) => one as Unit,
            _ => u,
        }
    }
    if upper {
        single(c.to_uppercase(), u)
    } else {
        single(c.to_lowercase(), u)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Unit(Unit),
    /// `?`
    Any,
    /// `*`
    Star,
    /// `**`
    StarStar,
    /// `[...]`: inclusive ranges.
    Class {
        negated: bool,
        ranges: Vec<(Unit, Unit)>,
    },
}

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    tokens: Vec<Token>,
    ignore_case: bool,
}

const SLASH: Unit = b'/' as Unit;

/// The class starting at `p[i] == '['`: its token and the index of its `]`, or `None`
/// when it is not closed (then `[` is a literal).
fn parse_class(p: &[Unit], i: usize) -> Option<(Token, usize)> {
    let mut j = i + 1;
    let negated = matches!(p.get(j).copied(), Some(u) if u == '!' as Unit || u == '^' as Unit);
    if negated {
        j += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut lo = *p.get(j)?;
        if lo == ']' as Unit && !first {
            return Some((Token::Class { negated, ranges }, j));
        }
        first = false;
        if lo == '\\' as Unit {
            j += 1;
            lo = *p.get(j)?;
        }
        let mut hi = lo;
        if p.get(j + 1) == Some(&('-' as Unit)) && p.get(j + 2).is_some_and(|u| *u != ']' as Unit) {
            j += 2;
            hi = p[j];
            if hi == '\\' as Unit {
                j += 1;
                hi = *p.get(j)?;
            }
        }
        ranges.push((lo.min(hi), lo.max(hi)));
        j += 1;
    }
}

impl Glob {
    /// Compile `pattern`. Only an empty pattern or a trailing `\` is refused.
    pub fn new(pattern: &[u8], ignore_case: bool) -> Result<Glob> {
        let shown = || format!("pattern {:?}", String::from_utf8_lossy(pattern));
        if pattern.is_empty() {
            return Err(Error::invalid(shown(), "empty"));
        }
        let p = units(pattern);
        let fold = |u: Unit| {
            if ignore_case {
                simple_case(u, false)
            } else {
                u
            }
        };
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < p.len() {
            let u = p[i];
            match char::from_u32(u) {
                Some('\\') => {
                    i += 1;
                    let next = *p
                        .get(i)
                        .ok_or_else(|| Error::invalid(shown(), "ends with a lone '\\'"))?;
                    tokens.push(Token::Unit(fold(next)));
                }
                Some('?') => tokens.push(Token::Any),
                Some('*') => {
                    if p.get(i + 1) == Some(&('*' as Unit)) {
                        while p.get(i + 1) == Some(&('*' as Unit)) {
                            i += 1;
                        }
                        tokens.push(Token::StarStar);
                    } else {
                        tokens.push(Token::Star);
                    }
                }
                Some('[') => match parse_class(&p, i) {
                    Some((class, end)) => {
                        tokens.push(class);
                        i = end;
                    }
                    None => tokens.push(Token::Unit(fold(u))),
                },
                _ => tokens.push(Token::Unit(fold(u))),
            }
            i += 1;
        }
        Ok(Glob {
            tokens,
            ignore_case,
        })
    }

    fn class_matches(&self, negated: bool, ranges: &[(Unit, Unit)], u: Unit) -> bool {
        let hit = |c: Unit| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c));
        let found = hit(u)
            || (self.ignore_case && (hit(simple_case(u, false)) || hit(simple_case(u, true))));
        found != negated
    }

    /// Does the whole of `text` match?
    pub fn matches(&self, text: &[u8]) -> bool {
        let t = &self.tokens;
        let n = t.len();
        // `*` and `**` may match nothing: reaching one also reaches what follows.
        let closure = |s: &mut [bool]| {
            for i in 0..n {
                if s[i] && matches!(t[i], Token::Star | Token::StarStar) {
                    s[i + 1] = true;
                }
            }
        };
        let mut cur = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        cur[0] = true;
        closure(&mut cur);
        for u in units(text) {
            let folded = if self.ignore_case {
                simple_case(u, false)
            } else {
                u
            };
            next.fill(false);
            for i in 0..n {
                if !cur[i] {
                    continue;
                }
                let step = match &t[i] {
                    Token::Unit(p) => *p == folded,
                    Token::Any => u != SLASH,
                    Token::Class { negated, ranges } => {
                        u != SLASH && self.class_matches(*negated, ranges, u)
                    }
                    Token::Star => {
                        if u != SLASH {
                            next[i] = true;
                        }
                        false
                    }
                    Token::StarStar => {
                        next[i] = true;
                        false
                    }
                };
                if step {
                    next[i + 1] = true;
                }
            }
            closure(&mut next);
            std::mem::swap(&mut cur, &mut next);
            if !cur.iter().any(|s| *s) {
                return false;
            }
        }
        cur[n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, text: &str) -> bool {
        Glob::new(p.as_bytes(), false)
            .unwrap()
            .matches(text.as_bytes())
    }

    fn mi(p: &str, text: &str) -> bool {
        Glob::new(p.as_bytes(), true)
            .unwrap()
            .matches(text.as_bytes())
    }

    #[test]
    fn wildcards_and_classes_match_like_the_shell() {
        assert!(m("hostname", "hostname") && !m("hostname", "hostnames"));
        assert!(m("*.conf", "a.conf") && m("*.conf", ".conf") && !m("*.conf", "a.confx"));
        assert!(m("h?st", "host") && !m("h?st", "hst") && !m("h?st", "hoost"));
        assert!(m("[abc]x", "bx") && !m("[abc]x", "dx"));
        assert!(m("[a-c]x", "cx") && !m("[a-c]x", "Cx"));
        assert!(m("[!a-c]x", "dx") && m("[^a-c]x", "dx") && !m("[!a-c]x", "ax"));
        assert!(m("[]a]", "]") && m("[]a]", "a"), "a leading ] is a member");
        assert!(m("[a-]", "-"), "a trailing - is a member");
        assert!(m("\\*", "*") && !m("\\*", "x"), "escaped star is literal");
        assert!(m("[x", "[x") && !m("[x", "x"), "unclosed [ is literal");
        assert!(m("*", "") && m("**", "") && !m("?", ""));
        assert!(m("a*b*c", "aXbYc") && m("a*b*c", "abc") && !m("a*b*c", "acb"));
    }

    #[test]
    fn single_star_stops_at_slashes_double_star_crosses_them() {
        assert!(m("etc/*", "etc/hosts") && !m("etc/*", "etc/ssh/sshd_config"));
        assert!(m("etc/**", "etc/ssh/sshd_config"));
        assert!(m("**/hosts", "a/b/hosts") && !m("*/hosts", "a/b/hosts"));
        assert!(!m("etc?hosts", "etc/hosts") && !m("etc[/]hosts", "etc/hosts"));
    }

    #[test]
    fn characters_not_bytes_and_invalid_bytes_as_their_own() {
        assert!(m("?", "\u{fc}"), "one two-byte character");
        assert!(m("gr??e", "gr\u{fc}\u{df}e"));
        assert!(m("[\u{e0}-\u{ff}]", "\u{fc}"));
        let g = Glob::new(b"bad?", false).unwrap();
        assert!(g.matches(b"bad\xff") && !g.matches(b"bad\xff\xfe"));
        let g = Glob::new(b"x\xffy", false).unwrap();
        assert!(g.matches(b"x\xffy") && !g.matches(b"x\xfey") && !g.matches("x\u{ff}y".as_bytes()));
    }

    #[test]
    fn ignore_case_folds_literals_and_classes() {
        assert!(!m("HOSTS", "hosts") && mi("HOSTS", "hosts") && mi("hosts", "HoStS"));
        assert!(mi("[A-Z]x", "qx") && mi("[a-z]x", "QX") && !m("[A-Z]x", "qx"));
        assert!(mi("\u{c4}rger", "\u{e4}rger"), "beyond ASCII");
        assert!(mi("[!a]", "b") && !mi("[!a]", "A"));
    }

    #[test]
    fn bad_patterns_are_refused_naming_them() {
        for p in ["", "abc\\"] {
            let e = Glob::new(p.as_bytes(), false).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
            assert!(e.to_string().contains("pattern"), "{e}");
        }
    }

    #[test]
    fn matching_stays_linear_on_hostile_patterns() {
        let p = "*a".repeat(50) + "b";
        let text = "a".repeat(10_000);
        let t = std::time::Instant::now();
        assert!(!m(&p, &text));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
