//! What the mock saw: counters tests assert on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri, header};

/// Live counters of a running mock, shared with the server through an [`Arc`].
///
/// Reading is cheap (atomics, or a short lock for the maps). Counters count from the start or
/// from the last [`reset`](Stats::reset).
#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    open_connections: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    chat_requests: AtomicU64,
    stream_requests: AtomicU64,
    embedding_requests: AtomicU64,
    cold_starts: AtomicU64,
    resets: AtomicU64,
    truncated_streams: AtomicU64,
    by_path: Mutex<HashMap<String, u64>>,
    by_status: Mutex<BTreeMap<u16, u64>>,
    last_request: Mutex<Option<RecordedRequest>>,
}

/// A request as the mock received it: method, URI, headers and the whole body.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The request method.
    pub method: Method,
    /// The request URI (path and query).
    pub uri: Uri,
    /// Every header, as received.
    pub headers: HeaderMap,
    /// The body bytes.
    pub body: Bytes,
}

impl RecordedRequest {
    /// The `Authorization` header, when present and valid text.
    pub fn authorization(&self) -> Option<&str> {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave a counter half-written, so a
    // poisoned lock is still good to read.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stats {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests received (every route, every outcome).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// TCP connections open right now.
    pub fn open_connections(&self) -> u64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Requests being handled right now; a streamed answer counts until its last byte.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most requests ever in flight at once.
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// `POST /v1/chat/completions` requests (streamed or not) that passed auth and faults.
    pub fn chat_requests(&self) -> u64 {
        self.chat_requests.load(Ordering::Relaxed)
    }

    /// Chat requests answered as a stream.
    pub fn stream_requests(&self) -> u64 {
        self.stream_requests.load(Ordering::Relaxed)
    }

    /// `POST /v1/embeddings` requests that passed auth and faults.
    pub fn embedding_requests(&self) -> u64 {
        self.embedding_requests.load(Ordering::Relaxed)
    }

    /// Requests that paid the cold-connection penalty (first on their connection).
    pub fn cold_starts(&self) -> u64 {
        self.cold_starts.load(Ordering::Relaxed)
    }

    /// Connections reset on purpose (by rate or by [`reset_next`](crate::MockServer::reset_next)).
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    /// Streamed answers cut off on purpose.
    pub fn truncated_streams(&self) -> u64 {
        self.truncated_streams.load(Ordering::Relaxed)
    }

    /// Requests received on `path` (e.g. `/v1/chat/completions`).
    pub fn requests_for_path(&self, path: &str) -> u64 {
        lock(&self.by_path).get(path).copied().unwrap_or(0)
    }

    /// Requests received, by path.
    pub fn by_path(&self) -> HashMap<String, u64> {
        lock(&self.by_path).clone()
    }

    /// Responses sent with `status`.
    pub fn responses_with_status(&self, status: StatusCode) -> u64 {
        lock(&self.by_status)
            .get(&status.as_u16())
            .copied()
            .unwrap_or(0)
    }

    /// Responses sent, by status code. Resets send no response and are not counted here.
    pub fn by_status(&self) -> BTreeMap<u16, u64> {
        lock(&self.by_status).clone()
    }

    /// The last request received, headers and body included.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.last_request).clone()
    }

    /// Sets every counter back to zero and forgets the last request. The live gauges
    /// (open connections, in flight) keep their value, and the in-flight maximum restarts
    /// from the current in-flight count.
    pub fn reset(&self) {
        for c in [
            &self.requests,
            &self.connections,
            &self.chat_requests,
            &self.stream_requests,
            &self.embedding_requests,
            &self.cold_starts,
            &self.resets,
            &self.truncated_streams,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        lock(&self.by_path).clear();
        lock(&self.by_status).clear();
        *lock(&self.last_request) = None;
    }

    pub(crate) fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            stats: Arc::clone(self),
        }
    }

    pub(crate) fn request_started(self: &Arc<Self>, path: &str) -> InFlightGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        *lock(&self.by_path).entry(path.to_owned()).or_insert(0) += 1;
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlightGuard {
            stats: Arc::clone(self),
        }
    }

    pub(crate) fn record_request(&self, req: RecordedRequest) {
        *lock(&self.last_request) = Some(req);
    }

    pub(crate) fn record_status(&self, status: StatusCode) {
        *lock(&self.by_status).entry(status.as_u16()).or_insert(0) += 1;
    }

    pub(crate) fn record_chat(&self, stream: bool) {
        self.chat_requests.fetch_add(1, Ordering::Relaxed);
        if stream {
            self.stream_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_embedding(&self) {
        self.embedding_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_cold_start(&self) {
        self.cold_starts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_reset(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_truncated(&self) {
        self.truncated_streams.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one request in flight until dropped; the response body carries it to its end.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    stats: Arc<Stats>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    stats: Arc<Stats>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_tracks_the_maximum_and_survives_reset() {
        let stats = Arc::new(Stats::new());
        let a = stats.request_started("/v1/models");
        let b = stats.request_started("/v1/models");
        assert_eq!((stats.in_flight(), stats.max_in_flight()), (2, 2));
        drop(a);
        assert_eq!((stats.in_flight(), stats.max_in_flight()), (1, 2));
        stats.record_status(StatusCode::OK);
        stats.reset();
        assert_eq!(stats.requests(), 0);
        assert_eq!(stats.requests_for_path("/v1/models"), 0);
        assert_eq!(stats.responses_with_status(StatusCode::OK), 0);
        assert_eq!((stats.in_flight(), stats.max_in_flight()), (1, 1));
        drop(b);
        assert_eq!((stats.in_flight(), stats.max_in_flight()), (0, 1));
    }
}
