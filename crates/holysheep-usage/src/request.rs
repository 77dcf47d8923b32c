//! Asking the upstream for usage: `stream_options.include_usage: true` added to a streamed
//! request's body, by editing bytes in place.

use bytes::{Bytes, BytesMut};

use crate::json::{self, Member};

/// What the layer did to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// Not a streamed completion request: left as it was.
    NotStreamed,
    /// The client asked for usage itself: left as it was, the usage chunk is theirs.
    ByClient,
    /// The layer asked for usage: the answer's usage must be taken out again.
    ByLayer,
}

/// Whether `path` names an endpoint with `stream_options` (chat and text completions).
pub(crate) fn has_stream_options(path: &str) -> bool {
    path.ends_with("/completions")
}

/// `body` asking for usage when it streams, and what was done.
pub(crate) fn ask_for_usage(body: &Bytes) -> (Bytes, Asked) {
    let text = &body[..];
    let Some((open, members, _)) = json::object(text, 0) else {
        return (body.clone(), Asked::NotStreamed);
    };
    let streams =
        json::last(&members, text, "stream").is_some_and(|m| &text[m.value.clone()] == b"true");
    if !streams {
        return (body.clone(), Asked::NotStreamed);
    }
    let Some(options) = json::last(&members, text, "stream_options") else {
        // `{` + the member + `,` + the rest: `stream` is there, so the object is not empty.
        let edited = splice(
            text,
            open + 1..open + 1,
            b"\"stream_options\":{\"include_usage\":true},",
        );
        return (edited, Asked::ByLayer);
    };
    match text[options.value.start] {
        b'n' => (
            splice(text, options.value.clone(), b"{\"include_usage\":true}"),
            Asked::ByLayer,
        ),
        b'{' => options_object(body, options),
        // Not an object: the upstream will say what is wrong with it, not us.
        _ => (body.clone(), Asked::NotStreamed),
    }
}

fn options_object(body: &Bytes, options: &Member) -> (Bytes, Asked) {
    let text = &body[..];
    let Some((open, members, _)) = json::object(text, options.value.start) else {
        return (body.clone(), Asked::NotStreamed);
    };
    match json::last(&members, text, "include_usage") {
        Some(m) if &text[m.value.clone()] == b"true" => (body.clone(), Asked::ByClient),
        Some(m) => (splice(text, m.value.clone(), b"true"), Asked::ByLayer),
        None if members.is_empty() => (
            splice(text, open + 1..open + 1, b"\"include_usage\":true"),
            Asked::ByLayer,
        ),
        None => (
            splice(text, open + 1..open + 1, b"\"include_usage\":true,"),
            Asked::ByLayer,
        ),
    }
}

/// `text` with `range` replaced by `with`.
fn splice(text: &[u8], range: std::ops::Range<usize>, with: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + with.len());
    out.extend_from_slice(&text[..range.start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&text[range.end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ask(body: &str) -> (Value, Asked) {
        let (out, asked) = ask_for_usage(&Bytes::copy_from_slice(body.as_bytes()));
        (serde_json::from_slice(&out).expect("still JSON"), asked)
    }

    #[test]
    fn streamed_requests_ask_for_usage() {
        let (v, asked) = ask(r#"{"model":"m","stream":true,"messages":[]}"#);
        assert_eq!(asked, Asked::ByLayer);
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["model"], "m");

        for options in [
            r#"null"#,
            r#"{}"#,
            r#"{"include_usage":false}"#,
            r#"{"x":1}"#,
        ] {
            let (v, asked) = ask(&format!(r#"{{"stream":true,"stream_options":{options}}}"#));
            assert_eq!(asked, Asked::ByLayer, "{options}");
            assert_eq!(v["stream_options"]["include_usage"], true, "{options}");
        }
        let (v, _) = ask(r#"{"stream":true,"stream_options":{"x":1}}"#);
        assert_eq!(v["stream_options"]["x"], 1);
    }

    #[test]
    fn others_are_left_byte_for_byte() {
        for body in [
            r#"{"model":"m","stream":false}"#,
            r#"{"model":"m"}"#,
            r#"{"stream":"true"}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"stream":true,"stream_options":[1]}"#,
            r#"not json"#,
            r#"{"stream":true,"#,
            r#"{"messages":[{"content":"\"stream\":true"}]}"#,
        ] {
            let (out, _) = ask_for_usage(&Bytes::copy_from_slice(body.as_bytes()));
            assert_eq!(out, body.as_bytes(), "{body}");
        }
        assert_eq!(
            ask(r#"{"stream":true,"stream_options":{"include_usage":true}}"#).1,
            Asked::ByClient
        );
    }
}
