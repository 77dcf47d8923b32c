//! Coalescing: one upstream call per key in flight, shared live with every identical request.
//!
//! The first miss for a key registers a [`Flight`] and becomes its leader ([`Lead`]); identical
//! misses that arrive while it is registered become followers ([`Follower`]). The leader publishes
//! the upstream response head and then every body chunk into the flight (chunks are refcounted
//! `Bytes`, never copied) and wakes followers through a `watch` channel. A follower replays the
//! chunks so far and then follows live.
//!
//! A flight keeps its chunks whole while the answer may still be stored (up to the entry bound);
//! past it, only as far back as its slowest follower has read, and the leader's recorder waits
//! (backpressure to the upstream read) while a follower is more than the read-ahead bound
//! behind. Every follower has a cursor for that.
//!
//! A follower the answer cannot serve (another shape, and no entry came of it) is handed off to
//! the flight made for its shape ([`Follower::hand_off`]): one per shape, for the whole group.
//!
//! A flight leaves the map on every path: when the answer ends (after its store write, so that
//! requests arriving meanwhile still share it), on an upstream error, when its recording grows
//! past the entry bound, and in [`Lead`]'s `Drop` — which also covers a dropped or panicking
//! leader future. A flight is only ever removed by the leader that registered it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use tokio::sync::{Notify, watch};

use crate::entry::Entry;
use crate::error::SharedError;
use crate::key::CacheKey;
use crate::shared::{Shared, lock};

/// The shape of answer a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
}

impl Shape {
    /// Whether an answer made for `leader` can be replayed byte for byte to `self`.
    pub(crate) fn replays(self, leader: Shape) -> bool {
        self.stream == leader.stream && (!self.stream || self.include_usage == leader.include_usage)
    }

    /// The shapes one answer serves alike: `include_usage` means nothing without a stream.
    fn class(self) -> Shape {
        Shape {
            stream: self.stream,
            include_usage: self.stream && self.include_usage,
        }
    }
}

/// The upstream response head, as the followers need it.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
}

#[derive(Debug)]
pub(crate) enum Phase {
    /// The leader is waiting for the upstream response head (and, for a JSON answer, its body).
    Waiting,
    Head(Arc<Head>),
    /// The leader's upstream call failed before a head was published; followers get its error.
    Failed(SharedError),
    /// The leader went away before a response (dropped or panicked).
    Abandoned,
}

#[derive(Debug)]
pub(crate) enum End {
    /// The body ended; the entry is `Some` when the answer was a good one.
    Complete(Option<Arc<Entry>>),
    /// The upstream body failed midway.
    Error(SharedError),
    /// The leader stopped reading the body before its end.
    Abandoned,
}

#[derive(Debug)]
pub(crate) struct FlightState {
    pub(crate) phase: Phase,
    /// The chunks kept, the first being chunk number `base` of the answer.
    chunks: VecDeque<Bytes>,
    base: usize,
    /// Bytes of the answer so far.
    pub(crate) size: usize,
    /// Bytes of `chunks`.
    kept: usize,
    /// Whether chunks are dropped once every follower has read them: the answer can no longer
    /// be stored, nor joined from its start.
    trimming: bool,
    pub(crate) end: Option<End>,
    pub(crate) followers: usize,
    /// Each follower that may read chunks, and the chunk it reads next.
    cursors: Vec<(u64, usize)>,
    next_follower: u64,
    /// Whether a follower may still join through [`Follower::hand_off`] and replay the answer
    /// from its first chunk.
    joinable: bool,
    /// The flights made for followers this one's answer cannot serve, one per shape; held
    /// while this flight is, so a late follower can still replay one that already ended.
    successors: HashMap<Shape, Arc<Flight>>,
}

impl FlightState {
    /// Keeps a chunk of the answer.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.size += chunk.len();
        self.kept += chunk.len();
        self.chunks.push_back(chunk);
        self.trim();
    }

    /// From now on keeps chunks only until every follower has read them.
    pub(crate) fn start_trimming(&mut self) {
        self.trimming = true;
        self.joinable = false;
        self.trim();
    }

    /// The whole answer, when every chunk is still kept.
    pub(crate) fn all_chunks(&mut self) -> Option<&[Bytes]> {
        (self.base == 0 && !self.trimming).then(|| &*self.chunks.make_contiguous())
    }

    /// Bytes some follower has yet to read, while trimming; 0 otherwise.
    pub(crate) fn backlog(&self) -> usize {
        if self.trimming && !self.cursors.is_empty() {
            self.kept
        } else {
            0
        }
    }

    /// Drops the chunks every follower has read; whether any was dropped.
    fn trim(&mut self) -> bool {
        if !self.trimming {
            return false;
        }
        let read = self
            .cursors
            .iter()
            .map(|&(_, next)| next)
            .min()
            .unwrap_or(self.base + self.chunks.len());
        let mut dropped = false;
        while self.base < read
            && let Some(chunk) = self.chunks.pop_front()
        {
            self.kept -= chunk.len();
            self.base += 1;
            dropped = true;
        }
        dropped
    }

    fn forget_cursor(&mut self, id: u64) {
        self.cursors.retain(|&(follower, _)| follower != id);
    }
}

/// One upstream call shared by identical requests.
#[derive(Debug)]
pub(crate) struct Flight {
    shape: Shape,
    state: Mutex<FlightState>,
    tx: watch::Sender<()>,
    /// Woken when a follower reads (or leaves), for a recorder waiting on the slowest one.
    read: Notify,
}

impl Flight {
    fn new(shape: Shape) -> Self {
        Self {
            shape,
            state: Mutex::new(FlightState {
                phase: Phase::Waiting,
                chunks: VecDeque::new(),
                base: 0,
                size: 0,
                kept: 0,
                trimming: false,
                end: None,
                followers: 0,
                cursors: Vec::new(),
                next_follower: 0,
                joinable: true,
                successors: HashMap::new(),
            }),
            tx: watch::Sender::new(()),
            read: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, FlightState> {
        lock(&self.state)
    }

    pub(crate) fn notify(&self) {
        self.tx.send_replace(());
    }

    /// Waits until no follower is more than `bound` bytes behind.
    pub(crate) async fn wait_for_followers(&self, bound: usize) {
        loop {
            let read = self.read.notified();
            if self.state().backlog() <= bound {
                return;
            }
            read.await;
        }
    }

    /// A new follower of this flight, in `state` (locked by the caller).
    fn follower(self: &Arc<Self>, state: &mut FlightState, shape: Shape) -> Follower {
        // Subscribed under the state lock, so no update after the caller read it is missed.
        let rx = self.tx.subscribe();
        let id = state.next_follower;
        state.next_follower += 1;
        state.followers += 1;
        state.cursors.push((id, state.base));
        Follower {
            flight: Arc::clone(self),
            rx,
            shape,
            id,
        }
    }
}

/// Registers `key` as in flight, or joins the flight already there.
pub(crate) fn join(shared: &Arc<Shared>, key: &CacheKey, shape: Shape) -> Joined {
    let mut flights = shared.flights();
    if let Some(flight) = flights.get(key) {
        let flight = Arc::clone(flight);
        let mut state = flight.state();
        let follower = flight.follower(&mut state, shape);
        drop(state);
        return Joined::Follower(follower);
    }
    let flight = Arc::new(Flight::new(shape));
    flights.insert(key.clone(), Arc::clone(&flight));
    drop(flights);
    Joined::Leader(Lead {
        registration: Some(Registration {
            shared: Arc::clone(shared),
            key: key.clone(),
            flight: Arc::clone(&flight),
            #[cfg(feature = "redis")]
            lease: None,
        }),
        flight,
        finished: false,
        #[cfg(feature = "redis")]
        mirror: None,
    })
}

pub(crate) enum Joined {
    Leader(Lead),
    Follower(Follower),
}

/// Removes a flight from the in-flight map when dropped, if it is still the one registered.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    key: CacheKey,
    flight: Arc<Flight>,
    /// The fleet lease, let go with the registration (see [`Lead::attach`]).
    #[cfg(feature = "redis")]
    lease: Option<crate::fleet::Lease>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut flights = self.shared.flights();
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(&self.key);
        }
    }
}

/// The leader's side of a flight.
pub(crate) struct Lead {
    flight: Arc<Flight>,
    registration: Option<Registration>,
    finished: bool,
    /// Mirrors the answer to remote followers, when this instance leads the fleet.
    #[cfg(feature = "redis")]
    mirror: Option<crate::fleet::Mirror>,
}

impl Lead {
    /// A leader nobody can join (coalescing off, or a follower going upstream on its own).
    pub(crate) fn alone(shape: Shape) -> Self {
        let flight = Arc::new(Flight::new(shape));
        flight.state().joinable = false;
        Self {
            flight,
            registration: None,
            finished: false,
            #[cfg(feature = "redis")]
            mirror: None,
        }
    }

    /// Whether others may join this flight (it is in the in-flight map).
    #[cfg(feature = "redis")]
    pub(crate) fn is_registered(&self) -> bool {
        self.registration.is_some()
    }

    /// Makes this the fleet's leader for its key: the answer is mirrored to remote followers,
    /// and the lease is let go with the registration (after the entry is stored, or when the
    /// flight is unregistered) — and never before the answer ended.
    #[cfg(feature = "redis")]
    pub(crate) fn attach(&mut self, mirror: crate::fleet::Mirror, lease: crate::fleet::Lease) {
        self.mirror = Some(mirror);
        if let Some(registration) = &mut self.registration {
            registration.lease = Some(lease);
        }
    }

    /// A chunk of the answer, for remote followers.
    pub(crate) fn mirror_chunk(&mut self, _chunk: &Bytes) {
        #[cfg(feature = "redis")]
        if let Some(mirror) = &mut self.mirror {
            mirror.chunk(_chunk);
        }
    }

    #[cfg(feature = "redis")]
    fn mirror_end(&mut self, ending: crate::fleet::Ending) {
        if let Some(mirror) = &mut self.mirror {
            mirror.end(ending);
        }
    }

    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// Stops new followers from joining, in the map and by hand-off.
    pub(crate) fn unregister(&mut self) {
        self.registration = None;
        self.flight.state().joinable = false;
    }

    /// Hands the registration over, e.g. to the task that writes the entry, so the flight stays
    /// joinable until the entry is in the store.
    pub(crate) fn take_registration(&mut self) -> Option<Registration> {
        self.registration.take()
    }

    /// The upstream call failed before a head was published: followers get `error`.
    pub(crate) fn fail(&mut self, error: SharedError) {
        #[cfg(feature = "redis")]
        self.mirror_end(crate::fleet::Ending::Failed);
        self.unregister();
        self.flight.state().phase = Phase::Failed(error);
        self.finished = true;
        self.flight.notify();
    }

    /// Publishes the response head.
    pub(crate) fn head(&mut self, head: Head) {
        #[cfg(feature = "redis")]
        if let Some(mirror) = &mut self.mirror {
            mirror.head(head.status, &head.headers, self.flight.shape);
        }
        self.flight.state().phase = Phase::Head(Arc::new(head));
        self.flight.notify();
    }

    /// Ends the flight. The registration, if still held, is dropped here unless taken before;
    /// a flight that ended with all its chunks may still be joined by hand-off.
    pub(crate) fn end(&mut self, end: End) {
        #[cfg(feature = "redis")]
        self.mirror_end(match end {
            End::Complete(_) => crate::fleet::Ending::Ok,
            End::Error(_) => crate::fleet::Ending::Error,
            End::Abandoned => crate::fleet::Ending::Abandoned,
        });
        self.registration = None;
        let mut state = self.flight.state();
        if !matches!(end, End::Complete(_)) {
            state.joinable = false;
        }
        state.end = Some(end);
        drop(state);
        self.finished = true;
        self.flight.notify();
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        // Unregister first: once out of the map, nobody new can join an abandoned flight.
        self.registration = None;
        let mut state = self.flight.state();
        // A head never published leaves followers nothing to follow, even when the body ended
        // (a JSON answer read whole before its head, then the leader dropped).
        let abandoned = if matches!(state.phase, Phase::Waiting) {
            state.phase = Phase::Abandoned;
            true
        } else if !self.finished && state.end.is_none() {
            state.end = Some(End::Abandoned);
            true
        } else {
            false
        };
        if abandoned {
            state.joinable = false;
            drop(state);
            self.flight.notify();
        }
    }
}

/// What a follower gets from its flight.
pub(crate) enum Followed {
    /// Replay the leader's response (head now, body live).
    Live(Arc<Head>),
    /// The leader's answer ended well, in another shape: serve it from this entry.
    Entry(Arc<Entry>),
    /// The leader's call failed: answer with its error.
    Failed(SharedError),
    /// The leader went away before an answer it could share: try again (another flight may form).
    Rejoin,
    /// The leader's answer cannot serve this shape: go to the flight made for it.
    HandOff,
}

/// A follower's side of a flight.
pub(crate) struct Follower {
    flight: Arc<Flight>,
    rx: watch::Receiver<()>,
    shape: Shape,
    id: u64,
}

impl Follower {
    /// Waits until the flight can answer this follower.
    pub(crate) async fn wait(&mut self) -> Followed {
        loop {
            if let Some(followed) = self.check() {
                return followed;
            }
            if self.rx.changed().await.is_err() {
                // Unreachable while we hold the flight (it owns the sender); be safe anyway.
                return Followed::Rejoin;
            }
        }
    }

    fn check(&self) -> Option<Followed> {
        let mut state = self.flight.state();
        let followed = match &state.phase {
            Phase::Waiting => return None,
            Phase::Failed(error) => Followed::Failed(Arc::clone(error)),
            Phase::Abandoned => Followed::Rejoin,
            Phase::Head(head) => {
                // An error answer is shape-free: share it (a 429 must not become 100 calls).
                if head.status != StatusCode::OK || self.shape.replays(self.flight.shape) {
                    return Some(Followed::Live(Arc::clone(head)));
                }
                if state.trimming {
                    // Too large to store: no entry will come of it.
                    Followed::HandOff
                } else {
                    match &state.end {
                        None => return None,
                        Some(End::Complete(Some(entry))) => Followed::Entry(Arc::clone(entry)),
                        Some(End::Complete(None)) => Followed::HandOff,
                        Some(End::Error(error)) => Followed::Failed(Arc::clone(error)),
                        Some(End::Abandoned) => Followed::Rejoin,
                    }
                }
            }
        };
        // This follower reads no chunk: it must not hold the trimming back.
        state.forget_cursor(self.id);
        let trimmed = state.trim();
        drop(state);
        if trimmed {
            self.flight.read.notify_one();
        }
        Some(followed)
    }

    /// The next chunk at `pos` of the leader's body: `Ok(Some)` a chunk, `Ok(None)` the end,
    /// `Err` the leader's body failed or was abandoned. Waits while nothing new is there.
    pub(crate) async fn chunk(&mut self, pos: usize) -> Result<Option<Bytes>, SharedError> {
        loop {
            {
                let mut state = self.flight.state();
                if let Some(cursor) = state.cursors.iter_mut().find(|(id, _)| *id == self.id) {
                    cursor.1 = pos;
                }
                if state.trim() {
                    self.flight.read.notify_one();
                }
                if let Some(chunk) = pos
                    .checked_sub(state.base)
                    .and_then(|i| state.chunks.get(i))
                {
                    return Ok(Some(chunk.clone()));
                }
                if pos < state.base {
                    // Never: chunks are dropped only once every cursor is past them.
                    return Err(Arc::new(std::io::Error::other(
                        "the shared answer moved on without this reader",
                    )));
                }
                match &state.end {
                    Some(End::Complete(_)) => return Ok(None),
                    Some(End::Error(error)) => return Err(Arc::clone(error)),
                    Some(End::Abandoned) => return Err(abandoned()),
                    None => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(abandoned());
            }
        }
    }

    /// This follower's flight cannot serve its shape: it follows the one flight made for that
    /// shape among this flight's followers, or leads it when it is the first (so each shape
    /// costs at most one more upstream call for the whole group). The new flight is also
    /// registered for newcomers when the key is free.
    pub(crate) fn hand_off(self, shared: &Arc<Shared>, key: &CacheKey) -> Joined {
        let class = self.shape.class();
        let mut state = self.flight.state();
        if let Some(next) = state.successors.get(&class).cloned() {
            let mut next_state = next.state();
            if next_state.joinable {
                let follower = next.follower(&mut next_state, self.shape);
                return Joined::Follower(follower);
            }
        }
        let next = Arc::new(Flight::new(self.shape));
        state.successors.insert(class, Arc::clone(&next));
        drop(state);
        let registration = {
            let mut flights = shared.flights();
            if flights.contains_key(key) {
                None
            } else {
                flights.insert(key.clone(), Arc::clone(&next));
                Some(Registration {
                    shared: Arc::clone(shared),
                    key: key.clone(),
                    flight: Arc::clone(&next),
                    #[cfg(feature = "redis")]
                    lease: None,
                })
            }
        };
        Joined::Leader(Lead {
            flight: next,
            registration,
            finished: false,
            #[cfg(feature = "redis")]
            mirror: None,
        })
    }
}

fn abandoned() -> SharedError {
    Arc::new(std::io::Error::other(
        "the shared upstream answer was abandoned",
    ))
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut state = self.flight.state();
        state.followers = state.followers.saturating_sub(1);
        state.forget_cursor(self.id);
        state.trim();
        drop(state);
        // The recorder may be waiting on this follower.
        self.flight.read.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{DefaultKeyPolicy, KeyPolicy, KeyRequest, ParsedBody};
    use crate::layer::CacheLayer;
    use crate::store::MemoryStore;

    fn shared() -> Arc<Shared> {
        CacheLayer::new(MemoryStore::new(1 << 20)).shared_for_tests()
    }

    fn key() -> CacheKey {
        let body = ParsedBody::parse(br#"{"model": "m", "messages": []}"#).unwrap();
        DefaultKeyPolicy::new()
            .key(&KeyRequest {
                path: "/chat/completions",
                upstream: "http://up",
                namespace: None,
                body: &body,
            })
            .unwrap()
    }

    const JSON: Shape = Shape {
        stream: false,
        include_usage: false,
    };

    const STREAM: Shape = Shape {
        stream: true,
        include_usage: false,
    };

    fn ok_head() -> Head {
        Head {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
        }
    }

    #[tokio::test]
    async fn dropped_leader_unregisters_and_followers_rejoin() {
        let s = shared();
        let Joined::Leader(lead) = join(&s, &key(), JSON) else {
            panic!("first is the leader")
        };
        let Joined::Follower(mut f) = join(&s, &key(), JSON) else {
            panic!("second follows")
        };
        assert_eq!(lead.flight().state().followers, 1);
        drop(lead);
        assert!(s.flights().is_empty());
        assert!(matches!(f.wait().await, Followed::Rejoin));
    }

    #[tokio::test]
    async fn failure_reaches_followers() {
        let s = shared();
        let Joined::Leader(mut lead) = join(&s, &key(), JSON) else {
            panic!()
        };
        let Joined::Follower(mut f) = join(&s, &key(), JSON) else {
            panic!()
        };
        let waiter = tokio::spawn(async move {
            matches!(f.wait().await, Followed::Failed(e) if e.to_string() == "boom")
        });
        tokio::task::yield_now().await;
        lead.fail(Arc::new(std::io::Error::other("boom")));
        assert!(waiter.await.unwrap());
        assert!(s.flights().is_empty());
    }

    #[tokio::test]
    async fn live_chunks_then_end() {
        let s = shared();
        let Joined::Leader(mut lead) = join(&s, &key(), JSON) else {
            panic!()
        };
        lead.head(ok_head());
        lead.flight().state().push(Bytes::from_static(b"a"));
        let Joined::Follower(mut f) = join(&s, &key(), JSON) else {
            panic!()
        };
        assert!(matches!(f.wait().await, Followed::Live(_)));
        assert_eq!(f.chunk(0).await.unwrap().unwrap(), "a");
        let next = tokio::spawn(async move { (f.chunk(1).await, f) });
        tokio::task::yield_now().await;
        lead.flight().state().push(Bytes::from_static(b"b"));
        lead.flight().notify();
        let (got, mut f) = next.await.unwrap();
        assert_eq!(got.unwrap().unwrap(), "b");
        lead.end(End::Complete(None));
        assert_eq!(f.chunk(2).await.unwrap(), None);
        drop(f);
        assert_eq!(lead.flight().state().followers, 0);
    }

    /// Issue 11, item 2: past the entry bound, a flight keeps only what its slowest follower
    /// has not read, and says how far behind that follower is.
    #[tokio::test]
    async fn trimming_keeps_what_followers_still_need() {
        let s = shared();
        let Joined::Leader(mut lead) = join(&s, &key(), STREAM) else {
            panic!()
        };
        let Joined::Follower(mut slow) = join(&s, &key(), STREAM) else {
            panic!()
        };
        let Joined::Follower(mut fast) = join(&s, &key(), STREAM) else {
            panic!()
        };
        lead.head(ok_head());
        let flight = Arc::clone(lead.flight());
        for piece in [&b"aa"[..], b"bb", b"cc"] {
            flight.state().push(Bytes::copy_from_slice(piece));
        }
        flight.state().start_trimming();
        assert_eq!(flight.state().backlog(), 6, "nobody read anything yet");
        for pos in 0..3 {
            fast.chunk(pos).await.unwrap().unwrap();
        }
        assert_eq!(flight.state().backlog(), 6, "the slow one holds it all");
        assert_eq!(slow.chunk(2).await.unwrap().unwrap(), "cc");
        assert_eq!(flight.state().backlog(), 2, "read up to the third chunk");
        drop(slow);
        assert_eq!(
            flight.state().backlog(),
            2,
            "the fast one reads the third next"
        );
        drop(fast);
        assert_eq!(flight.state().backlog(), 0);
        assert!(flight.state().all_chunks().is_none());
        drop(lead);
    }

    /// Issue 18, item 3: followers of another shape are handed to one new flight per shape.
    #[tokio::test]
    async fn hand_off_makes_one_flight_per_shape() {
        let s = shared();
        let Joined::Leader(mut lead) = join(&s, &key(), STREAM) else {
            panic!()
        };
        let followers: Vec<Follower> = (0..3)
            .map(|_| match join(&s, &key(), JSON) {
                Joined::Follower(f) => f,
                Joined::Leader(_) => panic!("the flight is registered"),
            })
            .collect();
        lead.head(ok_head());
        lead.end(End::Complete(None));
        let mut leaders = 0;
        let mut next = Vec::new();
        for mut f in followers {
            assert!(matches!(f.wait().await, Followed::HandOff));
            match f.hand_off(&s, &key()) {
                Joined::Leader(lead) => {
                    leaders += 1;
                    next.push(lead);
                }
                Joined::Follower(f) => assert!(f.shape.replays(JSON)),
            }
        }
        assert_eq!(leaders, 1, "one more upstream call for the three");
        assert_eq!(s.flights().len(), 1, "and newcomers can join it");
    }
}
