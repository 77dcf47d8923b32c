//! Coalescing: one upstream call per key in flight, shared live with every identical request.
//!
//! The first miss for a key registers a [`Flight`] and becomes its leader ([`Lead`]); identical
//! misses that arrive while it is registered become followers ([`Follower`]). The leader publishes
//! the upstream response head and then every body chunk into the flight (chunks are refcounted
//! `Bytes`, never copied) and wakes followers through a `watch` channel. A follower replays the
//! chunks so far and then follows live.
//!
//! A flight leaves the map on every path: when the answer ends (after its store write, so that
//! requests arriving meanwhile still share it), on an upstream error, when its recording grows
//! past the entry bound, and in [`Lead`]'s `Drop` — which also covers a dropped or panicking
//! leader future. A flight is only ever removed by the leader that registered it.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use tokio::sync::watch;

use crate::entry::Entry;
use crate::key::CacheKey;
use crate::shared::{Shared, lock};

/// The shape of answer a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
}

impl Shape {
    /// Whether an answer made for `leader` can be replayed byte for byte to `self`.
    fn replays(self, leader: Shape) -> bool {
        self.stream == leader.stream && (!self.stream || self.include_usage == leader.include_usage)
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
    /// The leader is waiting for the upstream response head.
    Waiting,
    Head(Arc<Head>),
    /// The leader's upstream call failed before a response; followers get the message.
    Failed(Arc<str>),
    /// The leader went away before a response (dropped or panicked).
    Abandoned,
}

#[derive(Debug)]
pub(crate) enum End {
    /// The body ended; the entry is `Some` when the answer was a good one.
    Complete(Option<Arc<Entry>>),
    /// The upstream body failed.
    Error(Arc<str>),
    /// The leader went away mid-body and nobody drove the rest.
    Abandoned,
}

#[derive(Debug)]
pub(crate) struct FlightState {
    pub(crate) phase: Phase,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) size: usize,
    /// Whether chunks are still kept (for followers, or for the entry).
    pub(crate) retaining: bool,
    pub(crate) end: Option<End>,
    pub(crate) followers: usize,
}

/// One upstream call shared by identical requests.
#[derive(Debug)]
pub(crate) struct Flight {
    shape: Shape,
    state: Mutex<FlightState>,
    tx: watch::Sender<()>,
}

impl Flight {
    fn new(shape: Shape) -> Self {
        Self {
            shape,
            state: Mutex::new(FlightState {
                phase: Phase::Waiting,
                chunks: Vec::new(),
                size: 0,
                retaining: true,
                end: None,
                followers: 0,
            }),
            tx: watch::Sender::new(()),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, FlightState> {
        lock(&self.state)
    }

    pub(crate) fn notify(&self) {
        self.tx.send_replace(());
    }
}

/// Registers `key` as in flight, or joins the flight already there.
pub(crate) fn join(shared: &Arc<Shared>, key: &CacheKey, shape: Shape) -> Joined {
    let mut flights = shared.flights();
    if let Some(flight) = flights.get(key) {
        let flight = Arc::clone(flight);
        // Subscribe before reading the state, so no update between the two is missed.
        let rx = flight.tx.subscribe();
        flight.state().followers += 1;
        return Joined::Follower(Follower { flight, rx, shape });
    }
    let flight = Arc::new(Flight::new(shape));
    flights.insert(key.clone(), Arc::clone(&flight));
    drop(flights);
    Joined::Leader(Lead {
        registration: Some(Registration {
            shared: Arc::clone(shared),
            key: key.clone(),
            flight: Arc::clone(&flight),
        }),
        flight,
        finished: false,
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
}

impl Lead {
    /// A leader nobody can join (coalescing off, or a follower going upstream on its own).
    pub(crate) fn alone(shape: Shape) -> Self {
        Self {
            flight: Arc::new(Flight::new(shape)),
            registration: None,
            finished: false,
        }
    }

    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// Whether followers may join (or have joined).
    pub(crate) fn is_registered(&self) -> bool {
        self.registration.is_some()
    }

    /// Stops new followers from joining.
    pub(crate) fn unregister(&mut self) {
        self.registration = None;
    }

    /// Hands the registration over, e.g. to the task that writes the entry, so the flight stays
    /// joinable until the entry is in the store.
    pub(crate) fn take_registration(&mut self) -> Option<Registration> {
        self.registration.take()
    }

    /// The upstream call failed before a response.
    pub(crate) fn fail(mut self, message: &str) {
        self.unregister();
        self.flight.state().phase = Phase::Failed(Arc::from(message));
        self.finished = true;
        self.flight.notify();
    }

    /// Publishes the response head.
    pub(crate) fn head(&self, head: Head) {
        self.flight.state().phase = Phase::Head(Arc::new(head));
        self.flight.notify();
    }

    /// Ends the flight. The registration, if still held, is dropped here unless taken before.
    pub(crate) fn end(&mut self, end: End) {
        self.flight.state().end = Some(end);
        self.finished = true;
        self.unregister();
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
        if !self.finished {
            let mut state = self.flight.state();
            if matches!(state.phase, Phase::Waiting) {
                state.phase = Phase::Abandoned;
            } else if state.end.is_none() {
                state.end = Some(End::Abandoned);
            }
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
    /// The leader's upstream call failed with this message.
    Failed(Arc<str>),
    /// The leader went away before an answer it could share: try again (another flight may form).
    Rejoin,
    /// The leader's answer cannot be shared in this shape: go upstream alone.
    Alone,
}

/// A follower's side of a flight.
pub(crate) struct Follower {
    flight: Arc<Flight>,
    rx: watch::Receiver<()>,
    shape: Shape,
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
        let state = self.flight.state();
        match &state.phase {
            Phase::Waiting => None,
            Phase::Failed(message) => Some(Followed::Failed(Arc::clone(message))),
            Phase::Abandoned => Some(Followed::Rejoin),
            Phase::Head(head) => {
                // An error answer is shape-free: share it (a 429 must not become 100 calls).
                if head.status != StatusCode::OK || self.shape.replays(self.flight.shape) {
                    return Some(Followed::Live(Arc::clone(head)));
                }
                match &state.end {
                    None => None,
                    Some(End::Complete(Some(entry))) => Some(Followed::Entry(Arc::clone(entry))),
                    Some(End::Complete(None)) => Some(Followed::Alone),
                    Some(End::Error(_) | End::Abandoned) => Some(Followed::Rejoin),
                }
            }
        }
    }

    /// The next chunk at `pos` of the leader's body: `Ok(Some)` a chunk, `Ok(None)` the end,
    /// `Err` the leader's body failed or was abandoned. Waits while nothing new is there.
    pub(crate) async fn chunk(&mut self, pos: usize) -> Result<Option<Bytes>, Arc<str>> {
        loop {
            {
                let state = self.flight.state();
                if let Some(chunk) = state.chunks.get(pos) {
                    return Ok(Some(chunk.clone()));
                }
                match &state.end {
                    Some(End::Complete(_)) => return Ok(None),
                    Some(End::Error(message)) => return Err(Arc::clone(message)),
                    Some(End::Abandoned) => {
                        return Err(Arc::from("the shared upstream answer was abandoned"));
                    }
                    None => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(Arc::from("the shared upstream answer was abandoned"));
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut state = self.flight.state();
        state.followers = state.followers.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{DefaultKeyPolicy, KeyPolicy, KeyRequest, ParsedBody};
    use crate::store::MemoryStore;
    use std::time::Duration;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(
            Arc::new(MemoryStore::new(1 << 20)),
            Arc::new(DefaultKeyPolicy::new()),
            Duration::from_secs(60),
            1 << 20,
            1 << 20,
            Arc::from("http://up"),
            true,
            true,
        ))
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
        let Joined::Leader(lead) = join(&s, &key(), JSON) else {
            panic!()
        };
        let Joined::Follower(mut f) = join(&s, &key(), JSON) else {
            panic!()
        };
        let waiter =
            tokio::spawn(
                async move { matches!(f.wait().await, Followed::Failed(m) if &*m == "boom") },
            );
        tokio::task::yield_now().await;
        lead.fail("boom");
        assert!(waiter.await.unwrap());
        assert!(s.flights().is_empty());
    }

    #[tokio::test]
    async fn live_chunks_then_end() {
        let s = shared();
        let Joined::Leader(mut lead) = join(&s, &key(), JSON) else {
            panic!()
        };
        lead.head(Head {
            status: StatusCode::OK,
            version: Version::HTTP_11,
            headers: HeaderMap::new(),
        });
        lead.flight().state().chunks.push(Bytes::from_static(b"a"));
        let Joined::Follower(mut f) = join(&s, &key(), JSON) else {
            panic!()
        };
        assert!(matches!(f.wait().await, Followed::Live(_)));
        assert_eq!(f.chunk(0).await.unwrap().unwrap(), "a");
        let next = tokio::spawn(async move { (f.chunk(1).await, f) });
        tokio::task::yield_now().await;
        lead.flight().state().chunks.push(Bytes::from_static(b"b"));
        lead.flight().notify();
        let (got, mut f) = next.await.unwrap();
        assert_eq!(got.unwrap().unwrap(), "b");
        lead.end(End::Complete(None));
        assert_eq!(f.chunk(2).await.unwrap(), None);
        drop(f);
        assert_eq!(lead.flight().state().followers, 0);
    }
}
