//! The mock's response body: whole bytes, or SSE events paced by a gap and maybe cut off.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::conn::{ConnCtl, Cut};
use crate::stats::{InFlightGuard, Stats};

/// The body of every mock response. It holds the request's in-flight count until it ends, so
/// a streamed answer counts as in flight until its last event.
pub(crate) struct MockBody {
    kind: Kind,
    _in_flight: Option<InFlightGuard>,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Box<EventStream>),
}

/// SSE events sent one by one, `gap` apart, until done or until `cut_after` events were sent.
pub(crate) struct EventStream {
    events: VecDeque<Bytes>,
    gap: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    sent: usize,
    cut: Option<PendingCut>,
}

/// A planned truncation: after `after` events, the connection is closed.
pub(crate) struct PendingCut {
    after: usize,
    state: CutState,
    conn: Arc<ConnCtl>,
    stats: Arc<Stats>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CutState {
    Planned,
    /// Returned `Pending` once so hyper flushes the events already written.
    Flushing,
    Done,
}

impl EventStream {
    pub(crate) fn new(events: Vec<Bytes>, gap: Duration) -> Self {
        Self {
            events: events.into(),
            gap,
            sleep: None,
            sent: 0,
            cut: None,
        }
    }

    /// Cuts the connection after `after` events instead of finishing.
    pub(crate) fn cut_after(mut self, after: usize, conn: Arc<ConnCtl>, stats: Arc<Stats>) -> Self {
        self.cut = Some(PendingCut {
            after,
            state: CutState::Planned,
            conn,
            stats,
        });
        self
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(cut) = &mut self.cut
            && self.sent >= cut.after
        {
            match cut.state {
                CutState::Planned => {
                    cut.state = CutState::Flushing;
                    cx.waker().wake_by_ref();
                }
                CutState::Flushing => {
                    cut.state = CutState::Done;
                    cut.stats.record_truncated();
                    cut.conn.cut(Cut::Close);
                }
                // The connection task drops this body with the connection.
                CutState::Done => {}
            }
            return Poll::Pending;
        }
        if self.events.is_empty() {
            return Poll::Ready(None);
        }
        if self.sent > 0 && !self.gap.is_zero() {
            let gap = self.gap;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        self.sent += 1;
        Poll::Ready(self.events.pop_front())
    }
}

impl MockBody {
    /// A body of these bytes.
    pub(crate) fn full(bytes: Bytes, in_flight: InFlightGuard) -> Self {
        Self {
            kind: Kind::Full(Some(bytes)),
            _in_flight: Some(in_flight),
        }
    }

    /// A streamed body.
    pub(crate) fn stream(events: EventStream, in_flight: InFlightGuard) -> Self {
        Self {
            kind: Kind::Stream(Box::new(events)),
            _in_flight: Some(in_flight),
        }
    }

    /// Lets go of the in-flight count once the body has nothing more to send.
    fn finish(&mut self) {
        self._in_flight = None;
    }
}

impl fmt::Debug for MockBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full(_) => "full",
            Kind::Stream(_) => "stream",
        };
        f.debug_struct("MockBody").field("kind", &kind).finish()
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let next = match &mut this.kind {
            Kind::Full(bytes) => bytes.take(),
            Kind::Stream(stream) => ready!(stream.poll_next(cx)),
        };
        if next.is_none() {
            this.finish();
        }
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(stream) => stream.events.is_empty() && stream.cut.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
