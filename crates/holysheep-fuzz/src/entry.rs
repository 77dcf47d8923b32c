//! The cache's entry envelope (`holysheep_cache::__fuzzing::Entry`).

use bytes::Bytes;
use holysheep_cache::__fuzzing::{Endpoint, Entry};
use http::HeaderValue;

/// Reads `data` as a stored value, and builds an entry from its pieces:
///
/// - `decode` never panics; what it decodes encodes to a value that decodes to the same entry,
///   and that value is stable (encoding it again gives the same bytes);
/// - an entry built from any parts (JSON or stream chunks, usage flag, store time, a content
///   type) comes back from `encode` and `decode` unchanged;
/// - an entry the shared-store check accepts as JSON is a good answer read as a `Value`
///   ([`crate::convert::good_as_value`]).
pub fn check(data: &[u8]) {
    if let Some(entry) = Entry::decode(Bytes::copy_from_slice(data)) {
        let encoded = entry.encode();
        let again = Entry::decode(encoded.clone()).expect("an encoded entry decodes");
        assert_eq!(again, entry, "decode(encode(e)) != e");
        assert_eq!(again.encode(), encoded, "the envelope is not stable");
        for endpoint in Endpoint::ALL {
            if entry.is_good(endpoint)
                && let Some(body) = entry.json_body()
            {
                assert!(
                    crate::convert::good_as_value(endpoint, body),
                    "a JSON entry that is not a good answer passes the check: {}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (_, pieces) = crate::split(rest);
    let content_type = HeaderValue::from_bytes(pieces[0]).unwrap_or(HeaderValue::from_static("x"));
    let body: Vec<Bytes> = pieces[1..]
        .iter()
        .map(|p| Bytes::copy_from_slice(p))
        .collect();
    let mut built = if first & 1 == 0 {
        Entry::json(body.concat().into(), content_type)
    } else {
        Entry::stream(body, first & 2 != 0, content_type)
    };
    if first & 4 != 0 {
        built = built.stored_at(u64::from(first) << 24 | 1);
    }
    assert_eq!(
        Entry::decode(built.encode()),
        Some(built),
        "an entry does not survive encode/decode"
    );
}
