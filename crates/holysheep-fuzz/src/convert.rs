//! The cache's answer checks and JSON↔SSE converters (`holysheep_cache::__fuzzing`).
//!
//! The first byte picks the endpoint (`% 3`) and whether a usage chunk is asked for (bit 2);
//! the rest is read two ways: as a whole JSON answer, and as a recorded stream cut into chunks.

use bytes::Bytes;
use holysheep_cache::__fuzzing::{Endpoint, check_stream, strip_usage};
use holysheep_core::sse::{DONE_EVENT, SseParser};
use serde_json::Value;

/// Checks `data` as a JSON answer ([`check_json`]) and as a stream ([`check_sse`]).
pub fn check(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let endpoint = Endpoint::ALL[usize::from(first % 3)];
    let include_usage = first & 4 != 0;
    check_json(endpoint, rest, include_usage);
    let (_, pieces) = crate::split(rest);
    let chunks: Vec<Bytes> = pieces.into_iter().map(Bytes::copy_from_slice).collect();
    check_sse(endpoint, &chunks);
}

/// What `valid_json` says of an answer, read as a `Value` instead: an object naming the
/// endpoint's `object`, without an `error`, with a non-empty `choices` (`data` for embeddings).
pub fn good_as_value(endpoint: Endpoint, body: &[u8]) -> bool {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let (object, items) = match endpoint {
        e if e == Endpoint::CHAT => ("chat.completion", "choices"),
        e if e == Endpoint::COMPLETIONS => ("text_completion", "choices"),
        _ => ("list", "data"),
    };
    answer.get("object").and_then(Value::as_str) == Some(object)
        && answer.get("error").is_none_or(Value::is_null)
        && answer
            .get(items)
            .and_then(Value::as_array)
            .is_some_and(|items| !items.is_empty())
}

/// A whole JSON answer:
///
/// - `valid_json` accepts only what [`good_as_value`] accepts;
/// - a good answer's stream (`json_to_sse`) is well formed (JSON object events, `[DONE]` last), is
///   complete when every choice has a finish reason, has a usage chunk exactly when asked, and
///   assembles (`sse_to_json`) into a good answer;
/// - the second round trip (JSON → SSE → JSON) gives back the first one's answer.
pub fn check_json(endpoint: Endpoint, body: &[u8], include_usage: bool) {
    let valid = endpoint.valid_json(body);
    if valid {
        assert!(
            good_as_value(endpoint, body),
            "valid_json accepts what is not a good answer: {}",
            String::from_utf8_lossy(body)
        );
    }
    let Some(stream) = endpoint.json_to_sse(body, include_usage) else {
        return;
    };
    assert_ne!(endpoint, Endpoint::EMBEDDINGS, "embeddings have no stream");
    assert_eq!(stream.last().map(|b| &b[..]), Some(DONE_EVENT));
    for data in event_data(&stream[..stream.len() - 1]) {
        assert!(
            serde_json::from_str::<Value>(&data).is_ok_and(|v| v.is_object()),
            "a converted stream holds an event that is not a JSON object: {data:?}"
        );
    }
    if !valid {
        return;
    }
    let answer: Value = serde_json::from_slice(body).expect("a valid answer is JSON");
    let all_finished = answer["choices"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|c| !c["finish_reason"].is_null());
    let (complete, has_usage) = check_stream(&stream);
    if all_finished {
        assert!(complete, "a finished answer's stream is not complete");
    }
    assert_eq!(has_usage, include_usage, "usage chunk present ≠ asked for");
    let back = endpoint
        .sse_to_json(&stream)
        .expect("a converted stream assembles");
    assert!(
        endpoint.valid_json(&back),
        "a good answer comes back from its stream not good: {}",
        String::from_utf8_lossy(&back)
    );
    let again = endpoint
        .json_to_sse(&back, include_usage)
        .expect("an assembled answer converts again");
    let back_again = endpoint
        .sse_to_json(&again)
        .expect("the second stream assembles");
    let as_value =
        |b: &[u8]| serde_json::from_slice::<Value>(b).expect("converted answers are JSON");
    assert_eq!(
        as_value(&back_again),
        as_value(&back),
        "the second round trip changed the answer"
    );
}

/// A recorded stream:
///
/// - a stream `SseCheck` calls complete holds only JSON object events before `[DONE]`, assembles
///   into a good answer for chat and completions, and stays complete, without usage, once its
///   usage chunk is stripped;
/// - `sse_to_json` and `strip_usage` never panic.
pub fn check_sse(endpoint: Endpoint, chunks: &[Bytes]) {
    let (complete, _) = check_stream(chunks);
    let assembled = endpoint.sse_to_json(chunks);
    let stripped = strip_usage(chunks);
    assert_eq!(stripped.last().map(|b| &b[..]), Some(DONE_EVENT));
    if !complete {
        return;
    }
    let events = event_data(chunks);
    for data in &events[..events.len() - 1] {
        assert!(
            serde_json::from_str::<Value>(data).is_ok_and(|v| v.is_object()),
            "a complete stream holds an event that is not a JSON object: {data:?}"
        );
    }
    assert_eq!(check_stream(&stripped), (true, false), "stripped stream");
    if endpoint == Endpoint::EMBEDDINGS {
        assert!(assembled.is_none());
        return;
    }
    let assembled = assembled.expect("a complete stream assembles");
    assert!(
        endpoint.valid_json(&assembled),
        "a complete stream assembles into an answer that is not good: {}",
        String::from_utf8_lossy(&assembled)
    );
}

/// The data of every event in `chunks`.
fn event_data(chunks: &[Bytes]) -> Vec<String> {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        while let Some(event) = parser.next_event() {
            out.push(event.data);
        }
    }
    out
}
