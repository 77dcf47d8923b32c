//! The Server-Sent-Events parser (`holysheep_core::sse`).

use holysheep_core::sse::{SseEvent, SseParser, encode_event};

/// Inputs longer than this are not also fed one byte at a time (that costs a call per byte).
const BYTEWISE_MAX: usize = 4096;

/// Feeds `data` (after its cut points, see [`crate`]'s `split`) to the parser whole, in pieces
/// and byte by byte, and checks:
///
/// - every way yields the same events and leaves the same bytes buffered;
/// - the events are those of [`reference()`], a line-by-line reading of the WHATWG rules;
/// - no event's data holds a CR, and each survives `encode_event` and a parse;
/// - after a blank line nothing is left buffered.
pub fn check(data: &[u8]) {
    let (body, pieces) = crate::split(data);
    let (whole, whole_buffered) = parse(&[body]);
    let (split, split_buffered) = parse(&pieces);
    assert_eq!(whole, split, "events depend on how the bytes were split");
    assert_eq!(whole_buffered, split_buffered);
    if body.len() <= BYTEWISE_MAX {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            parse(&bytes).0,
            whole,
            "events differ when fed byte by byte"
        );
    }
    assert_eq!(whole, reference(body), "parser and reference disagree");
    for event in &whole {
        assert!(!event.data.contains('\r'), "a CR in data: {event:?}");
        let (again, buffered) = parse(&[&encode_event(&event.data)]);
        assert_eq!(buffered, 0);
        assert_eq!(
            again.len(),
            1,
            "encode_event({:?}) is not one event",
            event.data
        );
        assert_eq!(
            again[0].data, event.data,
            "data does not survive encode_event"
        );
    }
    let (_, buffered) = parse(&[body, b"\n\n"]);
    assert_eq!(buffered, 0, "bytes still buffered after a blank line");
}

fn parse(pieces: &[&[u8]]) -> (Vec<SseEvent>, usize) {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in pieces {
        parser.push(piece);
        while let Some(event) = parser.next_event() {
            events.push(event);
        }
    }
    (events, parser.buffered())
}

/// The events of a whole stream, read the plain way: cut into lines at CRLF, CR or LF (a last
/// line without an end is not a line yet), then each line as the spec says.
pub fn reference(body: &[u8]) -> Vec<SseEvent> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                lines.push(&body[start..i]);
                i += 2;
                start = i;
            }
            b'\r' | b'\n' => {
                lines.push(&body[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    let mut event_type: Option<String> = None;
    let mut id: Option<String> = None;
    for line in lines {
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(SseEvent {
                    event: event_type.take(),
                    data,
                    id: id.clone(),
                });
            }
            event_type = None;
            continue;
        }
        if line.starts_with(b":") {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value).into_owned();
        match field {
            b"data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => data = Some(value),
            },
            b"event" => event_type = Some(value),
            b"id" if !value.contains('\0') => id = Some(value),
            _ => {}
        }
    }
    events
}
