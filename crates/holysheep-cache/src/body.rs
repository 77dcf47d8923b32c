//! The response body of [`Cache`](crate::Cache) (see [`ResponseBody`]), and the recorder that
//! fills the cache while an answer is forwarded.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use holysheep_core::BoxError;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::mpsc;

use crate::convert::{Endpoint, SseCheck, sse_to_json, valid_json};
use crate::entry::{Entry, EntryBody};
use crate::error::CoalesceError;
use crate::flight::{End, Follower, Lead, Registration};
use crate::key::{CacheKey, KeyScheme};
use crate::shared::Shared;

/// The body of every response [`Cache`](crate::Cache) returns: a hit's replay, a miss's recorded
/// upstream body, a coalesced follower's live feed, or an untouched passthrough.
///
/// It is one concrete type, whatever the inner service's body: the inner body is boxed where it
/// is kept (a miss or a bypass, which cost an upstream call anyway), so hits allocate nothing
/// for their body and generic `Into<BoxError>` bounds never reach the caller's `async` code.
///
/// A miss's answer reaches the client chunk by chunk as the upstream sends it; each chunk is
/// also kept (a refcounted `Bytes` clone, no copy) for the entry and for coalesced followers. The
/// entry is judged and written only when the body ends.
///
/// An upstream body still open when the response head is returned is read by a spawned task,
/// which records each chunk and forwards it to the leader's client over an unbounded channel: a
/// follower never waits on the leader's client, and a slow leader's client never slows the
/// followers (the channel holds at most the answer itself).
///
/// **When the leader's client goes away mid-answer**, the task keeps reading the upstream body
/// to its end if followers are sharing it or the answer could still be stored (a `200` within
/// the entry bound) — the tokens are paid for either way — and stores the answer if it
/// completes. It stops early, dropping the upstream body, once the answer has outgrown the entry
/// bound with no follower left, and at once if nobody needs the rest. Either way the cache never
/// holds a partial answer. (Without a tokio runtime the body is read inline by the client, and
/// the same rule applies when the body is dropped.)
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Chunks(VecDeque<Bytes>),
    // Boxed: a recording is large and rare next to hits.
    Record(Box<Recording>),
    Follow(BoxStream<'static, Result<Bytes, BoxError>>),
    Driven {
        pending: VecDeque<Frame<Bytes>>,
        rx: mpsc::UnboundedReceiver<Result<Frame<Bytes>, BoxError>>,
    },
    Passthrough(UnsyncBoxBody<Bytes, BoxError>),
}

impl ResponseBody {
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(data)),
        }
    }

    pub(crate) fn chunks(chunks: Vec<Bytes>) -> Self {
        Self {
            kind: Kind::Chunks(chunks.into()),
        }
    }

    pub(crate) fn record(recording: Recording) -> Self {
        Self {
            kind: Kind::Record(Box::new(recording)),
        }
    }

    pub(crate) fn follow(follower: Follower) -> Self {
        Self {
            kind: Kind::Follow(follow_stream(follower).boxed()),
        }
    }

    pub(crate) fn passthrough<B>(inner: B) -> Self
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        Self {
            kind: Kind::Passthrough(box_body(inner)),
        }
    }
}

fn box_body<B>(body: B) -> UnsyncBoxBody<Bytes, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    body.map_frame(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
        .map_err(Into::into)
        .boxed_unsync()
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "Full",
            Kind::Chunks(_) => "Chunks",
            Kind::Record(_) => "Record",
            Kind::Follow(_) => "Follow",
            Kind::Driven { .. } => "Driven",
            Kind::Passthrough(_) => "Passthrough",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Chunks(chunks) => Poll::Ready(chunks.pop_front().map(|c| Ok(Frame::data(c)))),
            Kind::Record(recording) => recording.poll_frame(cx),
            Kind::Follow(stream) => stream
                .poll_next_unpin(cx)
                .map(|c| c.map(|c| c.map(Frame::data))),
            Kind::Driven { pending, rx } => match pending.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rx.poll_recv(cx),
            },
            Kind::Passthrough(inner) => Pin::new(inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(data) => data.is_none(),
            Kind::Chunks(chunks) => chunks.is_empty(),
            Kind::Record(recording) => recording.is_end_stream(),
            Kind::Follow(_) | Kind::Driven { .. } => false,
            Kind::Passthrough(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Chunks(chunks) => {
                SizeHint::with_exact(chunks.iter().map(|c| c.len() as u64).sum())
            }
            Kind::Record(recording) => recording.size_hint(),
            Kind::Follow(_) | Kind::Driven { .. } => SizeHint::default(),
            Kind::Passthrough(inner) => inner.size_hint(),
        }
    }
}

fn follow_stream(
    follower: Follower,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    futures_util::stream::unfold(Some((follower, 0usize)), |state| async move {
        let (mut follower, pos) = state?;
        match follower.chunk(pos).await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some((follower, pos + 1)))),
            Ok(None) => None,
            Err(message) => Some((Err(CoalesceError::stream_failed(message).into()), None)),
        }
    })
}

/// What to write when a recorded answer ends well.
pub(crate) struct Plan {
    pub(crate) ttl: Duration,
}

/// The leader's recording of an upstream answer: feeds followers, judges the answer, stores it.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    key: CacheKey,
    lead: Lead,
    endpoint: Endpoint,
    content_type: HeaderValue,
    /// Judge the answer at its end (a `200`); off for error answers kept only for followers.
    judge: bool,
    plan: Option<Plan>,
    sse: Option<SseCheck>,
    overflowed: bool,
    stored: bool,
}

impl Recorder {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: CacheKey,
        lead: Lead,
        endpoint: Endpoint,
        content_type: HeaderValue,
        judge: bool,
        plan: Option<Plan>,
        sse: bool,
    ) -> Self {
        Self {
            shared,
            key,
            lead,
            endpoint,
            content_type,
            judge,
            plan,
            sse: sse.then(SseCheck::default),
            overflowed: false,
            stored: false,
        }
    }

    fn on_data(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        if let Some(sse) = &mut self.sse {
            sse.push(chunk);
        }
        let flight = Arc::clone(self.lead.flight());
        let mut state = flight.state();
        let mut overflow = false;
        if state.retaining {
            state.chunks.push(chunk.clone());
            state.size += chunk.len();
            overflow = !self.overflowed && state.size > self.shared.max_entry_bytes;
        }
        let followers = state.followers;
        drop(state);
        if overflow {
            self.overflowed = true;
            self.judge = false;
            self.plan = None;
            self.sse = None;
            // Out of the map first; after that no follower can join, so the count is final.
            self.lead.unregister();
            let mut state = flight.state();
            if state.followers == 0 {
                state.retaining = false;
                state.chunks = Vec::new();
            }
        }
        if followers > 0 {
            flight.notify();
        }
    }

    fn on_error(&mut self, error: &BoxError) {
        self.lead.end(End::Error(Arc::from(error.to_string())));
    }

    fn on_end(&mut self) {
        let flight = Arc::clone(self.lead.flight());
        let entry = {
            let state = flight.state();
            // Judging costs a parse: skip it when neither the store nor a follower needs it.
            if self.judge && (self.plan.is_some() || state.followers > 0) {
                self.judge_entry(&state.chunks)
            } else {
                None
            }
        };
        let entry = entry.map(|e| Arc::new(e.stored_now()));
        let put = match (&entry, &self.plan) {
            (Some(entry), Some(plan)) => self.value(entry).map(|v| (v, plan.ttl)),
            _ => None,
        };
        match put {
            Some((value, ttl)) => {
                // The flight stays joinable until the entry is in the store.
                let registration = self.lead.take_registration();
                self.lead.end(End::Complete(entry));
                self.stored = spawn_put(&self.shared, self.key.clone(), value, ttl, registration);
            }
            None => self.lead.end(End::Complete(entry)),
        }
    }

    fn judge_entry(&self, chunks: &[Bytes]) -> Option<Entry> {
        match &self.sse {
            Some(sse) => sse.complete().then(|| {
                Entry::stream(chunks.to_vec(), sse.has_usage(), self.content_type.clone())
            }),
            None => {
                let body = concat(chunks);
                valid_json(self.endpoint, &body)
                    .then(|| Entry::json(body, self.content_type.clone()))
            }
        }
    }

    /// The stored value: plain completion JSON for the Python-compatible scheme, the envelope
    /// otherwise.
    fn value(&self, entry: &Entry) -> Option<Bytes> {
        if self.key.scheme() == KeyScheme::PythonCompat {
            match entry.body() {
                EntryBody::Json(body) => Some(body.clone()),
                EntryBody::Stream { chunks, .. } => sse_to_json(self.endpoint, chunks),
            }
        } else {
            Some(entry.encode())
        }
    }

    fn worth_draining(&self) -> bool {
        if self.lead.is_finished() {
            return false;
        }
        let followers = self.lead.flight().state().followers;
        followers > 0 || (self.plan.is_some() && !self.overflowed)
    }
}

fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut out = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for chunk in many {
                out.extend_from_slice(chunk);
            }
            out.freeze()
        }
    }
}

/// Writes an entry in a spawned task, so a slow or failing store never delays the answer. The
/// registration is released once the write is done. Returns whether a write was started.
pub(crate) fn spawn_put(
    shared: &Arc<Shared>,
    key: CacheKey,
    value: Bytes,
    ttl: Duration,
    registration: Option<Registration>,
) -> bool {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::debug!("no tokio runtime: the cache entry is not written");
        return false;
    };
    let shared = Arc::clone(shared);
    handle.spawn(async move {
        if let Err(error) = shared.store.put(key.as_str(), value, ttl).await {
            shared.store_failed("put", &error);
        }
        drop(registration);
    });
    true
}

/// An upstream body being forwarded and recorded. See the [module docs](self).
pub(crate) struct Recording {
    body: Option<UnsyncBoxBody<Bytes, BoxError>>,
    recorder: Option<Recorder>,
    /// Frames read ahead by [`prefetch`](Self::prefetch), not yet given to the client.
    pending: VecDeque<Frame<Bytes>>,
    stored: bool,
}

impl Recording {
    pub(crate) fn new<B>(body: B, recorder: Recorder) -> Self
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        Self {
            body: Some(box_body(body)),
            recorder: Some(recorder),
            pending: VecDeque::new(),
            stored: false,
        }
    }

    fn poll_upstream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (Some(body), Some(recorder)) = (self.body.as_mut(), self.recorder.as_mut()) else {
            return Poll::Ready(None);
        };
        match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    recorder.on_data(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                recorder.on_error(&error);
                self.body = None;
                self.recorder = None;
                Poll::Ready(Some(Err(error)))
            }
            None => {
                recorder.on_end();
                self.stored = recorder.stored;
                self.body = None;
                self.recorder = None;
                Poll::Ready(None)
            }
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.pending.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.poll_upstream(cx)
    }

    /// Reads the upstream body ahead, up to `limit` bytes, so a whole JSON answer is judged (and
    /// its store write started) before the response head is sent. Returns whether it was stored.
    pub(crate) async fn prefetch(&mut self, limit: usize) -> Result<bool, BoxError> {
        let mut read = 0usize;
        while read <= limit && self.body.is_some() {
            match poll_fn(|cx| self.poll_upstream(cx)).await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    self.pending.push_back(frame);
                }
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        Ok(self.stored)
    }

    /// The client's body. An upstream body still open is read by a spawned task from here on,
    /// so followers never wait on the leader's client, and a leader's client that goes away
    /// does not stop the answer others share (the task then reads on only while that is worth
    /// it, see [`Recorder::worth_draining`]). Without a runtime the body is read inline.
    pub(crate) fn into_body(mut self) -> ResponseBody {
        if self.body.is_none() {
            return ResponseBody::record(self);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return ResponseBody::record(self);
        };
        let pending = std::mem::take(&mut self.pending);
        let (tx, rx) = mpsc::unbounded_channel();
        handle.spawn(drive(self, tx));
        ResponseBody {
            kind: Kind::Driven { pending, rx },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.pending.is_empty() && self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let pending: u64 = self
            .pending
            .iter()
            .map(|f| f.data_ref().map_or(0, |d| d.len() as u64))
            .sum();
        let rest = self
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + pending);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + pending);
        }
        hint
    }
}

/// Reads the upstream body, recording it and forwarding it to the leader's client. The channel
/// is unbounded so a slow client never slows the followers; it holds at most the answer itself.
async fn drive(
    mut recording: Recording,
    tx: mpsc::UnboundedSender<Result<Frame<Bytes>, BoxError>>,
) {
    let mut client = Some(tx);
    loop {
        if client
            .as_ref()
            .is_some_and(mpsc::UnboundedSender::is_closed)
        {
            client = None;
        }
        if client.is_none()
            && !recording
                .recorder
                .as_ref()
                .is_some_and(Recorder::worth_draining)
        {
            // Dropping the recording drops the upstream body: nobody needs the rest.
            return;
        }
        match poll_fn(|cx| recording.poll_upstream(cx)).await {
            Some(Ok(frame)) => {
                if let Some(tx) = &client
                    && tx.send(Ok(frame)).is_err()
                {
                    client = None;
                }
            }
            Some(Err(error)) => {
                if let Some(tx) = client {
                    let _ = tx.send(Err(error));
                }
                return;
            }
            None => return,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let (Some(body), Some(recorder)) = (self.body.take(), self.recorder.take()) else {
            return;
        };
        if !recorder.worth_draining() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let mut rest = Recording {
                body: Some(body),
                recorder: Some(recorder),
                pending: VecDeque::new(),
                stored: false,
            };
            while rest.recorder.as_ref().is_some_and(Recorder::worth_draining) {
                match poll_fn(|cx| rest.poll_upstream(cx)).await {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            // Whatever is left is dropped here; `worth_draining` is false, so no new task.
        });
    }
}
