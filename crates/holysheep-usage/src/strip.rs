//! Taking the usage back out of a stream, for a client that did not ask for it.
//!
//! With `include_usage`, OpenAI adds `"usage":null` to every chunk and sends one more chunk,
//! with `"choices":[]` and the usage, before `[DONE]`. Without it, neither is there. So for a
//! client that did not ask, each event is rewritten: the usage-only chunk is dropped, and the
//! top-level `usage` member is cut out of every other chunk with the comma that joined it, every
//! other byte kept as the upstream sent it.

use bytes::{Bytes, BytesMut};

use crate::json;

/// Rewrites whole events as they complete; an event cut between two frames waits for its end.
#[derive(Debug)]
pub(crate) struct Stripper {
    pending: BytesMut,
    limit: usize,
    given_up: bool,
}

impl Stripper {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pending: BytesMut::new(),
            limit,
            given_up: false,
        }
    }

    /// Takes the next piece of the stream; returns what the client gets now (maybe nothing).
    pub(crate) fn push(&mut self, data: &[u8]) -> Bytes {
        if self.given_up {
            return Bytes::copy_from_slice(data);
        }
        self.pending.extend_from_slice(data);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            rewrite(&event, &mut out);
        }
        if self.pending.len() > self.limit {
            // An event this long is no usage chunk; stop holding bytes back.
            tracing::debug!(
                bytes = self.pending.len(),
                "stream event past the bound; the rest of the stream passes unchanged"
            );
            self.given_up = true;
            out.extend_from_slice(&self.pending.split());
        }
        out.freeze()
    }

    /// Whether no bytes are held back.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The stream ended: an unfinished event goes out as it is.
    pub(crate) fn finish(&mut self) -> Bytes {
        self.pending.split().freeze()
    }
}

/// The end of the first whole event in `buf` (after its blank line), if there is one.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buf.len() {
        let eol = match buf[i] {
            b'\n' => 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            // A lone CR at the end may be the first half of a CRLF: wait for more.
            b'\r' if i + 1 == buf.len() => return None,
            b'\r' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start && i > 0 {
            return Some(i + eol);
        }
        i += eol;
        line_start = i;
    }
    None
}

/// Appends `event` to `out`, without its usage.
fn rewrite(event: &[u8], out: &mut BytesMut) {
    let Some((start, end)) = only_data(event) else {
        out.extend_from_slice(event);
        return;
    };
    let payload = &event[start..end];
    let Some((_, members, close)) = json::object(payload, 0) else {
        out.extend_from_slice(event);
        return;
    };
    if payload[close..].iter().any(|b| !b.is_ascii_whitespace()) {
        out.extend_from_slice(event);
        return;
    }
    let Some(index) = members.iter().rposition(|m| m.is(payload, "usage")) else {
        out.extend_from_slice(event);
        return;
    };
    let usage = &members[index];
    let usage_only = json::last(&members, payload, "choices").is_some_and(|c| {
        payload[c.value.clone()]
            .iter()
            .filter(|b| !b.is_ascii_whitespace())
            .eq(b"[]".iter())
    }) && &payload[usage.value.clone()] != b"null";
    if usage_only {
        return;
    }
    // Cut from the end of the previous member to the end of this one (`,"usage":null`), or,
    // for the first member, from its key to the start of the next (`"usage":null,`).
    let cut = match (index.checked_sub(1), members.get(index + 1)) {
        (Some(prev), _) => members[prev].value.end..usage.value.end,
        (None, Some(next)) => usage.key.start..next.key.start,
        (None, None) => usage.key.start..usage.value.end,
    };
    out.extend_from_slice(&event[..start + cut.start]);
    out.extend_from_slice(&event[start + cut.end..]);
}

/// The payload of the event's one `data:` line, as a range of `event`. `None` when the event
/// has no data line or several (then it is passed on untouched).
fn only_data(event: &[u8]) -> Option<(usize, usize)> {
    let mut found = None;
    let mut i = 0;
    while i < event.len() {
        let end = event[i..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map_or(event.len(), |p| i + p);
        let line = &event[i..end];
        if let Some(rest) = line.strip_prefix(b"data:") {
            if found.is_some() {
                return None;
            }
            let skip = usize::from(rest.first() == Some(&b' '));
            found = Some((i + 5 + skip, end));
        }
        i = end;
        if event.get(i) == Some(&b'\r') {
            i += 1;
        }
        if event.get(i) == Some(&b'\n') {
            i += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An OpenAI stream with `include_usage`, and the same stream without it.
    const WITH: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"usage\\\":1\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n",
    );
    const WITHOUT: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\\"usage\\\":1\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    fn run(pieces: &[&[u8]], limit: usize) -> Vec<u8> {
        let mut s = Stripper::new(limit);
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&s.push(p));
        }
        out.extend_from_slice(&s.finish());
        out
    }

    #[test]
    fn the_stream_a_client_would_have_got() {
        assert_eq!(run(&[WITH.as_bytes()], 1 << 20), WITHOUT.as_bytes());
    }

    #[test]
    fn usage_first_middle_and_crlf() {
        let mut s = Stripper::new(1024);
        let got = s.push(b"data: {\"usage\":null,\"id\":1}\r\n\r\ndata:{\"id\":2, \"usage\" : null , \"x\":[]}\n\n");
        assert_eq!(
            &got[..],
            b"data: {\"id\":1}\r\n\r\ndata:{\"id\":2 , \"x\":[]}\n\n"
        );
        // Usage on the last content chunk (some providers): kept chunk, usage cut.
        let got =
            s.push(b"data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n");
        assert_eq!(&got[..], b"data: {\"choices\":[{\"index\":0}]}\n\n");
    }

    #[test]
    fn foreign_events_pass_untouched() {
        let events = "event: x\ndata: a\ndata: b\n\ndata: {\"usage\":null\n\nid: 1\n\ndata: {\"usage\":1} trailing\n\n";
        assert_eq!(run(&[events.as_bytes()], 1024), events.as_bytes());
    }

    #[test]
    fn a_long_event_gives_up_and_passes_everything() {
        let long = format!("data: {{\"x\":\"{}\",\"usage\":null}}\n\n", "y".repeat(100));
        // Whole events are rewritten whatever their length ...
        assert!(!run(&[long.as_bytes()], 50).ends_with(b"null}\n\n"));
        // ... but one held back past the bound is let go, and the rest of the stream with it.
        let (a, b) = long.as_bytes().split_at(60);
        let got = run(&[a, b, long.as_bytes()], 50);
        assert_eq!(got, [long.as_bytes(), long.as_bytes()].concat());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_stream(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
            let bytes = WITH.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&bytes[last..c]);
                last = c;
            }
            pieces.push(&bytes[last..]);
            prop_assert_eq!(run(&pieces, 1 << 20), WITHOUT.as_bytes());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            run(&[&bytes], 64);
        }
    }
}
