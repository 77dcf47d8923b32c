//! Server-Sent-Events streams of chat answers, written and read back.

use bytes::Bytes;
use holysheep_core::sse::{DONE_EVENT, SseParser};
use holysheep_mock::ChatAnswer;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The whole SSE body of `answer` streamed in `chunks` content chunks, as the mock upstream
/// sends it: its [events](ChatAnswer::to_events), then `data: [DONE]`.
pub fn stream_events(answer: &ChatAnswer, chunks: usize, include_usage: bool) -> Vec<Bytes> {
    let mut events = answer.to_events(chunks, include_usage);
    events.push(Bytes::from_static(DONE_EVENT));
    events
}

/// The `data:` payloads of an SSE body, each parsed as JSON into `T`, and whether the body ended
/// with `data: [DONE]`. Panics when a payload does not parse or anything follows `[DONE]`.
pub fn read_sse<T: DeserializeOwned>(body: &[u8]) -> (Vec<T>, bool) {
    let mut parser = SseParser::new();
    parser.push(body);
    let mut chunks = Vec::new();
    let mut done = false;
    while let Some(event) = parser.next_event() {
        assert!(!done, "nothing may follow [DONE]: {}", event.data);
        if event.is_done() {
            done = true;
        } else {
            chunks.push(
                serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("SSE data does not parse ({e}): {}", event.data)),
            );
        }
    }
    (chunks, done)
}

/// The JSON chunks of an SSE body, and whether it ended with `data: [DONE]` (see [`read_sse`]).
pub fn sse_chunks(body: &[u8]) -> (Vec<Value>, bool) {
    read_sse(body)
}

/// The joined `choices[0].delta.content` of streamed chunks.
pub fn stream_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use holysheep_core::chat::ChatCompletionChunk;

    use super::*;

    #[test]
    fn a_written_stream_reads_back() {
        let answer = ChatAnswer::new("m", "one two three four");
        let events = stream_events(&answer, 3, true);
        let body = events.concat();
        let (chunks, done) = sse_chunks(&body);
        assert!(done);
        assert_eq!(
            chunks.len(),
            3 + 1,
            "three content chunks and a usage chunk"
        );
        assert_eq!(stream_content(&chunks), "one two three four");
        let (typed, _) = read_sse::<ChatCompletionChunk>(&body);
        assert_eq!(typed[2].choices[0].finish_reason.as_deref(), Some("stop"));

        let cut = events[..2].concat();
        assert!(!sse_chunks(&cut).1, "no [DONE] in a cut stream");
    }

    #[test]
    #[should_panic(expected = "nothing may follow [DONE]")]
    fn data_after_done_is_refused() {
        read_sse::<Value>(b"data: [DONE]\n\ndata: {}\n\n");
    }
}
