//! The records of a leader's live stream, and how they are read back.
//!
//! Each stream entry has a field `k` (the kind) and the kind's fields:
//!
//! | `k` | fields | meaning |
//! |---|---|---|
//! | `h` | `s` status, `h` headers (`name: value` lines), `a` shape (`s`/`j` then `u`/`n`) | the response head |
//! | `c` | `d` bytes | a body chunk |
//! | `e` | `e` `ok`, `error`, `failed`, `abandoned` or `cut` | how the answer ended |
//! | `r` | — | the entry is stored (if it was to be) and the lease released |
//!
//! A stream written by anything else (garbage) reads as [`Record::Invalid`], which followers
//! treat as a leader that failed.

use bytes::Bytes;
use holysheep_core::hop_by_hop::{HopByHop, remove_hop_by_hop};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use redis::Value;

use crate::flight::Shape;

/// How a leader's answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The body ended.
    Ok,
    /// The upstream body failed midway.
    Error,
    /// The upstream call failed before a response head.
    Failed,
    /// The leader went away.
    Abandoned,
    /// The answer grew past what is mirrored (the entry bound).
    Cut,
}

impl Ending {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
            Self::Cut => "cut",
        }
    }

    fn parse(s: &[u8]) -> Option<Self> {
        Some(match s {
            b"ok" => Self::Ok,
            b"error" => Self::Error,
            b"failed" => Self::Failed,
            b"abandoned" => Self::Abandoned,
            b"cut" => Self::Cut,
            _ => return None,
        })
    }
}

/// One record of a live stream.
#[derive(Debug)]
pub(crate) enum Record {
    Head {
        status: StatusCode,
        headers: HeaderMap,
        shape: Shape,
    },
    Chunk(Bytes),
    End(Ending),
    Released,
    Invalid,
}

/// The fields of a head record.
pub(crate) fn head_fields(
    status: StatusCode,
    headers: &HeaderMap,
    shape: Shape,
) -> [(&'static str, Vec<u8>); 4] {
    // Not passed on: the leader's connection's fields, and its length (the body is framed
    // again for each follower).
    let hop_by_hop = HopByHop::of(headers);
    let mut lines = Vec::new();
    for (name, value) in headers {
        if hop_by_hop.contains(name) || name == header::CONTENT_LENGTH {
            continue;
        }
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    let shape = vec![
        if shape.stream { b's' } else { b'j' },
        if shape.include_usage { b'u' } else { b'n' },
    ];
    [
        ("k", b"h".to_vec()),
        ("s", status.as_u16().to_string().into_bytes()),
        ("h", lines),
        ("a", shape),
    ]
}

/// Reads one entry's field list (`[field, value, ...]`).
fn parse_fields(fields: &Value) -> Record {
    let pairs: Vec<(&[u8], &[u8])> = match fields {
        Value::Array(items) => items
            .chunks_exact(2)
            .filter_map(|pair| Some((bulk(&pair[0])?, bulk(&pair[1])?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((bulk(k)?, bulk(v)?)))
            .collect(),
        _ => return Record::Invalid,
    };
    let get = |name: &[u8]| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    match get(b"k") {
        Some(b"c") => get(b"d").map_or(Record::Invalid, |d| {
            Record::Chunk(Bytes::copy_from_slice(d))
        }),
        Some(b"e") => get(b"e")
            .and_then(Ending::parse)
            .map_or(Record::Invalid, Record::End),
        Some(b"r") => Record::Released,
        Some(b"h") => parse_head(get(b"s"), get(b"h"), get(b"a")).unwrap_or(Record::Invalid),
        _ => Record::Invalid,
    }
}

fn parse_head(status: Option<&[u8]>, lines: Option<&[u8]>, shape: Option<&[u8]>) -> Option<Record> {
    let status = StatusCode::from_bytes(status?).ok()?;
    let mut headers = HeaderMap::new();
    for line in lines?.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        headers.append(name, value);
    }
    // A stream written by anything else may hold them too.
    remove_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let shape = match shape? {
        [s, u] => Shape {
            stream: match s {
                b's' => true,
                b'j' => false,
                _ => return None,
            },
            include_usage: *u == b'u',
        },
        _ => return None,
    };
    Some(Record::Head {
        status,
        headers,
        shape,
    })
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The entries of an `XREAD` reply for one stream, as `(id, record)`: empty for a nil reply (a
/// block that timed out). `None` for a reply that is not an `XREAD` reply.
pub(crate) fn parse_xread(reply: &Value) -> Option<Vec<(String, Record)>> {
    let streams: Vec<&Value> = match reply {
        Value::Nil => return Some(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some(&pair[1]),
                _ => None,
            })
            .collect::<Option<_>>()?,
        Value::Map(items) => items.iter().map(|(_, v)| v).collect(),
        _ => return None,
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            return None;
        };
        for entry in entries {
            let Value::Array(pair) = entry else {
                return None;
            };
            let [id, fields] = &pair[..] else {
                return None;
            };
            let id = std::str::from_utf8(bulk(id)?).ok()?.to_owned();
            out.push((id, parse_fields(fields)));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(b: &[u8]) -> Value {
        Value::BulkString(b.to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &[u8])]) -> Value {
        Value::Array(vec![
            bs(id.as_bytes()),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [bs(k.as_bytes()), bs(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn a_head_survives_the_round_trip() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        headers.append("x-request-id", HeaderValue::from_static("a b:c"));
        let shape = Shape {
            stream: true,
            include_usage: true,
        };
        let fields = head_fields(StatusCode::TOO_MANY_REQUESTS, &headers, shape);
        let as_slices: Vec<(&str, &[u8])> = fields.iter().map(|(k, v)| (*k, &v[..])).collect();
        let reply = Value::Array(vec![Value::Array(vec![
            bs(b"stream"),
            Value::Array(vec![entry("1-0", &as_slices)]),
        ])]);
        let records = parse_xread(&reply).unwrap();
        let [
            (
                id,
                Record::Head {
                    status,
                    headers,
                    shape: got,
                },
            ),
        ] = &records[..]
        else {
            panic!("{records:?}");
        };
        assert_eq!(id, "1-0");
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
        assert_eq!(headers["x-request-id"], "a b:c");
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(*got, shape);
    }

    #[test]
    fn chunks_ends_and_releases_are_read() {
        let reply = Value::Array(vec![Value::Array(vec![
            bs(b"s"),
            Value::Array(vec![
                entry("1-0", &[("k", b"c"), ("d", b"data: {}\n\n")]),
                entry("1-1", &[("k", b"e"), ("e", b"ok")]),
                entry("1-2", &[("k", b"r")]),
            ]),
        ])]);
        let records = parse_xread(&reply).unwrap();
        assert!(matches!(&records[0].1, Record::Chunk(d) if &d[..] == b"data: {}\n\n"));
        assert!(matches!(records[1].1, Record::End(Ending::Ok)));
        assert!(matches!(records[2].1, Record::Released));
        assert!(parse_xread(&Value::Nil).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        assert!(parse_xread(&Value::Int(3)).is_none());
        assert!(parse_xread(&Value::Array(vec![bs(b"x")])).is_none());
        let reply = Value::Array(vec![Value::Array(vec![
            bs(b"s"),
            Value::Array(vec![
                entry("1-0", &[("k", b"h"), ("s", b"999x")]),
                entry("1-1", &[("k", b"e"), ("e", b"what")]),
                entry("1-2", &[("k", b"zz")]),
                entry(
                    "1-3",
                    &[
                        ("k", b"h"),
                        ("s", b"200"),
                        ("h", b"bad header line"),
                        ("a", b"sn"),
                    ],
                ),
            ]),
        ])]);
        let records = parse_xread(&reply).unwrap();
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|(_, r)| matches!(r, Record::Invalid)));
    }
}
