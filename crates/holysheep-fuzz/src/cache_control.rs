//! The request `Cache-Control` parser (`holysheep_cache::RequestControl`).

use std::time::Duration;

use holysheep_cache::RequestControl;
use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Reads `data` as header lines (split at LF; a line whose first byte is odd is a `Pragma`, the
/// rest `Cache-Control`, that byte dropped) and checks:
///
/// - the `Cache-Control` lines read one by one mean what they mean joined with `", "` into one
///   line (RFC 9110 §5.3), and their order does not matter;
/// - the TTL written is never above the layer's, none at all exactly when `no-store` (or a zero
///   layer TTL); a request that may read may write;
/// - a `no-store` line added forbids both; a `max-age=0` line added forbids reading.
pub fn check(data: &[u8]) {
    let mut lines: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&kind, value)) = line.split_first() else {
            continue;
        };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let name = if kind & 1 == 1 { PRAGMA } else { CACHE_CONTROL };
        lines.push((name, value));
    }
    let control = read(lines.iter().cloned());
    for layer in [0, 1, 60, 3600].map(Duration::from_secs) {
        let ttl = control.ttl(layer);
        assert!(ttl.is_none_or(|ttl| ttl <= layer && !ttl.is_zero()));
        assert_eq!(ttl.is_none(), control.no_store || layer.is_zero());
    }
    assert!(!control.may_read() || control.may_write());
    assert_eq!(read(lines.iter().rev().cloned()), control, "order matters");

    let cache_control: Vec<&str> = lines
        .iter()
        .filter(|(name, _)| *name == CACHE_CONTROL)
        .filter_map(|(_, value)| value.to_str().ok())
        .collect();
    let all_text = cache_control.len()
        == lines
            .iter()
            .filter(|(name, _)| *name == CACHE_CONTROL)
            .count();
    if all_text && !cache_control.is_empty() {
        let joined = HeaderValue::from_str(&cache_control.join(", ")).expect("visible ASCII");
        assert_eq!(
            read([(CACHE_CONTROL, joined)]),
            control,
            "one joined line reads differently from its lines"
        );
    }

    let with = |extra: &'static str| {
        read(
            lines
                .iter()
                .cloned()
                .chain([(CACHE_CONTROL, HeaderValue::from_static(extra))]),
        )
    };
    let no_store = with("no-store");
    assert!(!no_store.may_read() && !no_store.may_write());
    assert!(!with("max-age=0").may_read());
}

fn read(lines: impl IntoIterator<Item = (HeaderName, HeaderValue)>) -> RequestControl {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(name, value);
    }
    RequestControl::from_headers(&headers)
}
