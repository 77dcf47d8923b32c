//! Just enough JSON to find the top-level members of an object, as byte ranges, so a body can be
//! edited in place: the bytes around an edit stay exactly as they were.

use std::ops::Range;

/// One member of an object: where its key (quotes included) and its value are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

impl Member {
    /// Whether the key is `name` (keys with escapes never match: none of ours has any).
    pub(crate) fn is(&self, text: &[u8], name: &str) -> bool {
        let key = &text[self.key.clone()];
        key.len() == name.len() + 2 && &key[1..key.len() - 1] == name.as_bytes()
    }
}

/// The object starting at `start` (after whitespace): where its `{` is, and its members.
/// `None` when the text there is not a well-formed object.
pub(crate) fn object(text: &[u8], start: usize) -> Option<(usize, Vec<Member>, usize)> {
    let mut i = ws(text, start);
    if text.get(i) != Some(&b'{') {
        return None;
    }
    let open = i;
    i = ws(text, i + 1);
    let mut members = Vec::new();
    if text.get(i) == Some(&b'}') {
        return Some((open, members, i + 1));
    }
    loop {
        let key_start = i;
        i = string(text, i)?;
        let key = key_start..i;
        i = ws(text, i);
        if text.get(i) != Some(&b':') {
            return None;
        }
        let value_start = ws(text, i + 1);
        i = value(text, value_start, 0)?;
        members.push(Member {
            key,
            value: value_start..i,
        });
        i = ws(text, i);
        match text.get(i) {
            Some(b',') => i = ws(text, i + 1),
            Some(b'}') => return Some((open, members, i + 1)),
            _ => return None,
        }
    }
}

/// The last member called `name`: what a JSON parser that keeps the last duplicate reads.
pub(crate) fn last<'a>(members: &'a [Member], text: &[u8], name: &str) -> Option<&'a Member> {
    members.iter().rev().find(|m| m.is(text, name))
}

fn ws(text: &[u8], mut i: usize) -> usize {
    while matches!(text.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end of the string starting at `i`.
fn string(text: &[u8], i: usize) -> Option<usize> {
    if text.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match text.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// Deep enough for any real request; deeper is refused rather than recursed into.
const MAX_DEPTH: usize = 128;

/// The end of the value starting at `i`.
fn value(text: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    match *text.get(i)? {
        b'"' => string(text, i),
        open @ (b'{' | b'[') => {
            let close = if open == b'{' { b'}' } else { b']' };
            let mut j = ws(text, i + 1);
            if text.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                if open == b'{' {
                    j = string(text, j)?;
                    j = ws(text, j);
                    if text.get(j) != Some(&b':') {
                        return None;
                    }
                    j = ws(text, j + 1);
                }
                j = value(text, j, depth + 1)?;
                j = ws(text, j);
                match *text.get(j)? {
                    b',' => j = ws(text, j + 1),
                    c if c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
            let mut j = i;
            while matches!(
                text.get(j),
                Some(b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
            ) {
                j += 1;
            }
            Some(j)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Option<Vec<(String, String)>> {
        let t = text.as_bytes();
        let (_, members, _) = object(t, 0)?;
        Some(
            members
                .iter()
                .map(|m| {
                    (
                        text[m.key.clone()].to_owned(),
                        text[m.value.clone()].to_owned(),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn top_level_members_only() {
        let got = keys(
            r#" { "a" : {"stream":true} , "s\"x":"}", "n":-1.5e3,"l":[1,{"b":[]}],"t":true } "#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                ("\"a\"".into(), "{\"stream\":true}".into()),
                ("\"s\\\"x\"".into(), "\"}\"".into()),
                ("\"n\"".into(), "-1.5e3".into()),
                ("\"l\"".into(), "[1,{\"b\":[]}]".into()),
                ("\"t\"".into(), "true".into()),
            ]
        );
        assert_eq!(keys("{}").unwrap(), vec![]);
    }

    #[test]
    fn malformed_is_none_not_a_panic() {
        for text in [
            "",
            "[]",
            "{",
            "{\"a\"",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":\"",
            "{\"a\" 1}",
            "{\"a\":[1 2]}",
        ] {
            assert_eq!(keys(text), None, "{text}");
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(500), "]".repeat(500));
        assert_eq!(keys(&deep), None);
    }
}
