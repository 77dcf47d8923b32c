//! The response body of [`Cache`](crate::Cache) (see [`ResponseBody`]), and the recorder that
//! fills the cache while an answer is forwarded.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{Either, select};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use holysheep_core::BoxError;
use holysheep_core::signal::{DetachedSlot, PoolSlot};
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use crate::convert::{Endpoint, SseCheck, sse_to_json, valid_json};
use crate::entry::{Entry, EntryBody};
use crate::error::{CoalesceError, share};
use crate::flight::{End, Follower, Head, Lead, Registration};
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
/// which records each chunk and feeds it to the leader's client, so a follower never depends on
/// the leader's client being polled. **Memory is bounded whatever the readers do**: the task
/// reads the upstream body at most [`read_ahead`](crate::CacheLayer::read_ahead) bytes (256 KiB
/// by default) ahead of the leader's client and of each live follower, and waits for the
/// slowest otherwise (backpressure to the upstream); the answer is kept whole only up to the
/// entry bound, while it may still be stored.
///
/// **When the leader's client goes away mid-answer**, the task keeps reading the upstream body
/// for the followers sharing it, and, when none is left, to finish and store the answer — the
/// tokens are paid for either way — within the [finish budget](crate::CacheLayer::finish_budget)
/// (15 s and 256 KiB by default) and only while no other request waits for a slot of the pool
/// limit below, if there is one (the body holds one of its slots, counted as detached
/// meanwhile). It stops early, dropping the upstream body and freeing its slot, when the
/// budget is spent, when a request waits for a slot, once the answer has outgrown the entry
/// bound, and at once if nobody needs the rest. Either way the cache never holds a partial
/// answer. (Without a tokio runtime the body is read inline by the client, and dropped with it.)
pub struct ResponseBody {
    kind: Kind,
}

/// A frame the reading task feeds to the leader's client, with the room it takes in the client's
/// buffer, given back as the client takes the frame.
type Fed = (Result<Frame<Bytes>, BoxError>, Option<OwnedSemaphorePermit>);

enum Kind {
    Full(Option<Bytes>),
    Chunks(VecDeque<Bytes>),
    // Boxed: a recording is large and rare next to hits.
    Record(Box<Recording>),
    Follow(BoxStream<'static, Result<Bytes, BoxError>>),
    Driven {
        pending: VecDeque<Frame<Bytes>>,
        rx: mpsc::UnboundedReceiver<Fed>,
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
                // The permit is dropped here: the room is free again.
                None => rx.poll_recv(cx).map(|fed| fed.map(|(frame, _room)| frame)),
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
            Err(error) => Some((Err(CoalesceError::stream_failed(error).into()), None)),
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
    /// The response head, until followers get it: at once for a stream, once a JSON answer is
    /// read whole (or up to the entry bound), so that followers never get a JSON head before its
    /// whole body; a body that fails before is the call's failure, for all.
    head: Option<Head>,
    /// Judge the answer at its end (a `200`); off for error answers kept only for followers.
    judge: bool,
    plan: Option<Plan>,
    sse: Option<SseCheck>,
    overflowed: bool,
    stored: bool,
    /// The pool slot the upstream body holds, when a pool limit below says so.
    slot: Option<PoolSlot>,
}

impl Recorder {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: CacheKey,
        lead: Lead,
        endpoint: Endpoint,
        head: Head,
        content_type: HeaderValue,
        judge: bool,
        plan: Option<Plan>,
        sse: bool,
        slot: Option<PoolSlot>,
    ) -> Self {
        Self {
            shared,
            key,
            lead,
            endpoint,
            content_type,
            head: Some(head),
            judge,
            plan,
            sse: sse.then(SseCheck::default),
            overflowed: false,
            stored: false,
            slot,
        }
    }

    /// Gives followers the response head (once).
    fn publish(&mut self) {
        if let Some(head) = self.head.take() {
            self.lead.head(head);
        }
    }

    fn on_data(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        if let Some(sse) = &mut self.sse {
            sse.push(chunk);
        }
        self.lead.mirror_chunk(chunk);
        let flight = Arc::clone(self.lead.flight());
        let mut state = flight.state();
        state.push(chunk.clone());
        let overflow = !self.overflowed && state.size > self.shared.settings.max_entry_bytes;
        let followers = state.followers;
        drop(state);
        if overflow {
            self.overflowed = true;
            self.judge = false;
            self.plan = None;
            self.sse = None;
            // Out of the map first; after that no follower can join.
            self.lead.unregister();
            // Past the entry bound, chunks are kept only until every follower has read them.
            flight.state().start_trimming();
            flight.notify();
        } else if followers > 0 {
            flight.notify();
        }
    }

    /// The upstream body failed: the leader gets `error` back, its followers share it.
    fn on_error(&mut self, error: BoxError) -> BoxError {
        self.lead.unregister();
        let followers = self.lead.flight().state().followers;
        let (error, shared) = share(error, followers);
        if self.head.is_some() {
            // Followers never got a head: for them too the call failed.
            self.lead.fail(shared);
        } else {
            self.lead.end(End::Error(shared));
        }
        error
    }

    fn on_end(&mut self) {
        self.publish();
        let flight = Arc::clone(self.lead.flight());
        let entry = {
            let mut state = flight.state();
            // Judging costs a parse: skip it when neither the store nor a follower needs it.
            if self.judge && (self.plan.is_some() || state.followers > 0) {
                state
                    .all_chunks()
                    .and_then(|chunks| self.judge_entry(chunks))
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

    fn followers(&self) -> usize {
        self.lead.flight().state().followers
    }

    /// Whether the rest of the answer could still be stored.
    fn worth_storing(&self) -> bool {
        !self.lead.is_finished() && self.plan.is_some() && !self.overflowed
    }

    /// Stops reading an answer nobody waits for: nothing is stored, the flight is abandoned.
    fn give_up(&mut self, why: &'static str) {
        self.plan = None;
        tracing::debug!(key = %self.key, why, "stopped reading an answer its caller left");
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
    /// Whether it is handed to [`drive`]: when that task is dropped (it gave up, or the runtime
    /// shuts down), nothing reads on.
    driven: bool,
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
            driven: false,
        }
    }

    /// Gives followers the response head now (a stream: they follow it live).
    pub(crate) fn publish(&mut self) {
        if let Some(recorder) = &mut self.recorder {
            recorder.publish();
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
                let error = recorder.on_error(error);
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
    /// its store write started) before the response head is sent, then gives followers the
    /// head. Returns whether it was stored; a body that failed meanwhile fails the call.
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
        self.publish();
        Ok(self.stored)
    }

    /// The client's body. An upstream body still open is read by a spawned task from here on
    /// (see [`drive`]), so followers never wait on the leader's client, and a leader's client
    /// that goes away does not stop the answer others share. Without a runtime the body is
    /// read inline.
    pub(crate) fn into_body(mut self) -> ResponseBody {
        if self.body.is_none() {
            return ResponseBody::record(self);
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return ResponseBody::record(self);
        };
        let read_ahead = self
            .recorder
            .as_ref()
            .map_or(crate::CacheLayer::DEFAULT_READ_AHEAD_BYTES, |r| {
                r.shared.settings.read_ahead
            });
        let pending = std::mem::take(&mut self.pending);
        let (tx, rx) = mpsc::unbounded_channel();
        self.driven = true;
        handle.spawn(drive(self, Some(Feed::new(tx, read_ahead))));
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

/// The leader's client, as the reading task feeds it: at most `read_ahead` bytes (and one
/// chunk) waiting for it.
struct Feed {
    tx: mpsc::UnboundedSender<Fed>,
    room: Arc<Semaphore>,
    read_ahead: u32,
}

impl Feed {
    fn new(tx: mpsc::UnboundedSender<Fed>, read_ahead: usize) -> Self {
        let read_ahead = u32::try_from(read_ahead.min(Semaphore::MAX_PERMITS))
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            tx,
            room: Arc::new(Semaphore::new(read_ahead as usize)),
            read_ahead,
        }
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Waits for room for `frame` in the client's buffer, then hands it over; `Err` once the
    /// client is gone.
    async fn send(&self, frame: Frame<Bytes>) -> Result<(), ()> {
        let len = frame.data_ref().map_or(0, Bytes::len);
        // A chunk larger than the whole buffer waits for all of it, then goes alone.
        let need = u32::try_from(len)
            .unwrap_or(u32::MAX)
            .clamp(1, self.read_ahead);
        let room = Arc::clone(&self.room).acquire_many_owned(need);
        let room = match select(pin!(room), pin!(self.tx.closed())).await {
            Either::Left((Ok(room), _)) => room,
            _ => return Err(()),
        };
        self.tx.send((Ok(frame), Some(room))).map_err(|_| ())
    }

    fn fail(self, error: BoxError) {
        let _ = self.tx.send((Err(error), None));
    }
}

/// How often an answer read for nobody checks its budget and the pool while it waits for the
/// upstream.
const BUDGET_CHECK_EVERY: Duration = Duration::from_millis(20);

/// An answer read for the cache alone (its caller and every follower gone), within the finish
/// budget, counting its pool slot as detached meanwhile.
struct Alone {
    since: Instant,
    read: usize,
    timeout: Duration,
    max_bytes: usize,
    slot: Option<PoolSlot>,
    _detached: Option<DetachedSlot>,
}

impl Alone {
    fn start(recorder: &Recorder) -> Self {
        let settings = &recorder.shared.settings;
        Self {
            since: Instant::now(),
            read: 0,
            timeout: settings.finish_timeout,
            max_bytes: settings.finish_max_bytes,
            slot: recorder.slot.clone(),
            _detached: recorder.slot.as_ref().map(PoolSlot::detach),
        }
    }

    /// Why reading on must stop now, if it must.
    fn stop(&self) -> Option<&'static str> {
        if self.since.elapsed() >= self.timeout {
            Some("the finish budget's time is spent")
        } else if self.read >= self.max_bytes {
            Some("the finish budget's bytes are spent")
        } else if self.slot.as_ref().is_some_and(PoolSlot::is_contended) {
            Some("another request waits for an upstream slot")
        } else {
            None
        }
    }

    /// The next upstream frame, or why reading stopped first.
    async fn read(
        &mut self,
        recording: &mut Recording,
    ) -> Result<Option<Result<Frame<Bytes>, BoxError>>, &'static str> {
        let mut next = pin!(poll_fn(|cx| recording.poll_upstream(cx)));
        loop {
            let left = self.timeout.saturating_sub(self.since.elapsed());
            let tick = tokio::time::sleep(BUDGET_CHECK_EVERY.min(left));
            match select(next.as_mut(), pin!(tick)).await {
                Either::Left((frame, _)) => {
                    if let Some(Ok(frame)) = &frame {
                        self.read += frame.data_ref().map_or(0, Bytes::len);
                    }
                    return Ok(frame);
                }
                Either::Right(_) => {
                    if let Some(why) = self.stop() {
                        return Err(why);
                    }
                }
            }
        }
    }
}

/// Reads the upstream body: records it, feeds the leader's client (`feed`, while it is there)
/// and the followers, each at most the read-ahead bound behind, and finishes it for the cache
/// within the budget once nobody reads (see [`ResponseBody`]).
async fn drive(mut recording: Recording, mut feed: Option<Feed>) {
    let mut alone: Option<Alone> = None;
    loop {
        if feed.as_ref().is_some_and(Feed::is_closed) {
            feed = None;
        }
        let Some(recorder) = recording.recorder.as_mut() else {
            return;
        };
        let read_ahead = recorder.shared.settings.read_ahead;
        let flight = Arc::clone(recorder.lead.flight());
        if feed.is_some() || recorder.followers() > 0 {
            alone = None;
        } else if !recorder.worth_storing() {
            // Dropping the recording drops the upstream body: nobody needs the rest.
            return;
        } else {
            let budget = alone.get_or_insert_with(|| Alone::start(recorder));
            if let Some(why) = budget.stop() {
                recorder.give_up(why);
                return;
            }
        }
        let frame = match &mut alone {
            Some(budget) => match budget.read(&mut recording).await {
                Ok(frame) => frame,
                Err(why) => {
                    if let Some(recorder) = &mut recording.recorder {
                        recorder.give_up(why);
                    }
                    return;
                }
            },
            None => poll_fn(|cx| recording.poll_upstream(cx)).await,
        };
        match frame {
            Some(Ok(frame)) => {
                // A follower more than the bound behind holds the upstream read back.
                flight.wait_for_followers(read_ahead).await;
                if let Some(client) = &feed
                    && client.send(frame).await.is_err()
                {
                    feed = None;
                }
            }
            Some(Err(error)) => {
                if let Some(client) = feed {
                    client.fail(error);
                }
                return;
            }
            None => return,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if self.driven {
            return;
        }
        let (Some(body), Some(recorder)) = (self.body.take(), self.recorder.take()) else {
            return;
        };
        if recorder.followers() == 0 && !recorder.worth_storing() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Read on for the followers, or for the cache within the finish budget.
        handle.spawn(drive(
            Recording {
                body: Some(body),
                recorder: Some(recorder),
                pending: VecDeque::new(),
                stored: false,
                driven: true,
            },
            None,
        ));
    }
}
