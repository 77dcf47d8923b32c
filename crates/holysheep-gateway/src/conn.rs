//! One caller's connection, served by hyper-util's connection builder: the timeouts that bound a
//! slow or silent caller, the per-request bookkeeping they need, and the lingering close that
//! lets a caller read an answer sent before its request body was read.
//!
//! The timeouts are three, as nginx has them:
//! - **header read**: a request head must arrive within it, counted from its first byte (a new
//!   connection counts from its accept, so a silent one is closed too);
//! - **body read**: a request body must arrive whole within it, counted from the end of the
//!   head, however steadily it drips; a late one fails with [`BodyReadTimeout`], which the
//!   routes answer with 408;
//! - **keep-alive**: a connection with no request in progress is closed after it.
//!
//! hyper's own header timeout starts when a kept-alive connection goes idle, so it cannot be a
//! short header bound and a longer keep-alive bound at once; [`ConnIo`] keeps both clocks
//! itself, on the read side of the socket, from what [`ConnService`] tells it about requests.
//! No clock runs while a request is in progress: its body has the body read bound, and its
//! answer may stream for as long as the upstream streams.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use holysheep_core::BoxError;
use http::{Request, Response, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower::Service;

/// The bounds on one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// A request head, from its first byte (or from the accept, for the first request).
    pub(crate) header_read: Duration,
    /// A whole request body, from the end of its head.
    pub(crate) body_read: Duration,
    /// A connection with no request in progress.
    pub(crate) keep_alive: Duration,
    /// Reading and discarding an unread request body after the answer.
    pub(crate) linger: Duration,
}

/// What a connection's socket ([`ConnIo`]) and its requests ([`ConnService`]) share.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Requests whose answer has not ended yet.
    active: AtomicUsize,
    /// How many requests have ended; a change tells the socket that the connection went idle
    /// again, even if it never saw it busy.
    ended: AtomicU64,
    /// HTTP/2: bytes on an idle connection (pings, settings) are not the start of a request.
    http2: AtomicBool,
    /// The last request's body was not read to its end.
    unread_body: AtomicBool,
    /// The socket, handed back when hyper is done with it and an unread body needs a
    /// lingering close.
    linger: Mutex<Option<TcpStream>>,
}

impl ConnState {
    /// The socket to linger on, if the connection ended with an unread request body.
    pub(crate) fn take_linger(&self) -> Option<TcpStream> {
        self.linger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Which clock the socket runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request head is expected or under way: the header read bound.
    Head,
    /// No request in progress and no byte of the next: the keep-alive bound.
    Idle,
    /// A request is in progress: no bound here.
    Busy,
}

/// The caller's socket as hyper reads and writes it, with the header and keep-alive clocks.
///
/// A clock that runs out fails the read hyper is waiting on, and hyper closes the connection.
/// When hyper drops the socket after a request whose body it did not read, the socket goes
/// back to the connection task for a [`linger`]ing close instead of being closed at once.
pub(crate) struct ConnIo {
    stream: Option<TcpStream>,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    phase: Phase,
    /// `state.ended` when the socket last looked.
    ended: u64,
    timer: Pin<Box<Sleep>>,
    /// A clock ran out: the caller was idle or slow, not mid-body, so there is nothing to
    /// linger for.
    expired: bool,
}

impl ConnIo {
    pub(crate) fn new(stream: TcpStream, state: Arc<ConnState>, timeouts: Timeouts) -> Self {
        Self {
            stream: Some(stream),
            state,
            timeouts,
            phase: Phase::Head,
            ended: 0,
            timer: Box::pin(tokio::time::sleep(timeouts.header_read)),
            expired: false,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::NotConnected.into())
    }

    fn start_clock(&mut self, phase: Phase, bound: Duration) {
        self.phase = phase;
        self.timer.as_mut().reset(Instant::now() + bound);
    }

    /// Busy while a request is in progress; idle (the keep-alive clock starts) when the last
    /// one has ended since the socket last looked.
    fn follow_requests(&mut self) {
        if self.state.active.load(Ordering::Acquire) > 0 {
            self.phase = Phase::Busy;
            return;
        }
        // Read after `active`: a request that ended is counted in `ended` first.
        let ended = self.state.ended.load(Ordering::Acquire);
        if self.phase == Phase::Busy || ended != self.ended {
            self.ended = ended;
            self.start_clock(Phase::Idle, self.timeouts.keep_alive);
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.follow_requests();
        let filled = buf.filled().len();
        match this.stream()?.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let started = buf.filled().len() > filled;
                if started && this.phase == Phase::Idle && !this.state.http2.load(Ordering::Relaxed)
                {
                    this.start_clock(Phase::Head, this.timeouts.header_read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if this.phase != Phase::Busy && this.timer.as_mut().poll(cx).is_ready() {
                    let what = match this.phase {
                        Phase::Head => "no complete request head within the header read timeout",
                        _ => "no request within the keep-alive timeout",
                    };
                    this.expired = true;
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = this.stream()?.poll_flush(cx);
        // An answer just went out. If it was the last one in progress, the connection is idle
        // now, and hyper will not read an idle HTTP/1.1 connection again until something wakes
        // it: the keep-alive clock must be that something.
        this.follow_requests();
        if this.phase == Phase::Idle && this.timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_shutdown(cx)
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        // h2 resets an unread stream on its own; an HTTP/1.1 caller may still be sending.
        let linger = self.state.unread_body.load(Ordering::Acquire)
            && !self.state.http2.load(Ordering::Relaxed)
            && !self.expired;
        if linger && let Some(stream) = self.stream.take() {
            *self
                .state
                .linger
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(stream);
        }
    }
}

/// The lingering close, as nginx does it: after an answer sent before the request body was read
/// (a 413 from `Content-Length`, a 401), the caller may still be sending that body, and some
/// callers (Python's `urllib`) only read the answer once they have sent it all. Closing at once
/// with unread data makes the kernel reset the connection, which fails their write and can
/// destroy the answer before they read it. So: shut down our side, then read and discard what
/// comes until the caller closes too, or `limit` passes.
pub(crate) async fn linger(mut stream: TcpStream, limit: Duration) {
    if limit.is_zero() {
        return;
    }
    let _ = stream.shutdown().await;
    let mut discard = vec![0u8; 16 * 1024];
    let drain = async { while let Ok(1..) = stream.read(&mut discard).await {} };
    let _ = tokio::time::timeout(limit, drain).await;
}

/// The service hyper calls for each request on one connection: the gateway's routes, with the
/// caller's address, a body read bound on the request body, and the count of requests in
/// progress that the socket's clocks read.
#[derive(Clone)]
pub(crate) struct ConnService {
    pub(crate) app: Router,
    pub(crate) peer: SocketAddr,
    pub(crate) state: Arc<ConnState>,
    pub(crate) body_read_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if request.version() == Version::HTTP_2 {
            self.state.http2.store(true, Ordering::Relaxed);
        }
        let active = Active::start(&self.state);
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        let body = DeadlineBody::new(body, self.body_read_timeout, Arc::clone(&self.state));
        let mut app = self.app.clone();
        ResponseFuture {
            inner: app.call(Request::from_parts(parts, body)),
            active: Some(active),
        }
    }
}

/// One request in progress; dropping it (when its answer ends, or is dropped) ends it.
#[derive(Debug)]
struct Active(Arc<ConnState>);

impl Active {
    fn start(state: &Arc<ConnState>) -> Self {
        // The flag is about the last request only: an earlier body hyper drained is no reason
        // to linger.
        state.unread_body.store(false, Ordering::Release);
        state.active.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(state))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// The answer of [`ConnService`]: the routes' answer, with its body tracked.
    pub(crate) struct ResponseFuture {
        #[pin]
        inner: axum::routing::future::RouteFuture<Infallible>,
        active: Option<Active>,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match ready!(this.inner.poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let active = this.active.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, active })))
    }
}

pin_project! {
    /// An answer's body that keeps its request counted as in progress until it ends, so no
    /// connection clock runs while an answer streams.
    pub(crate) struct TrackedBody {
        #[pin]
        inner: Body,
        active: Option<Active>,
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
            this.active.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that did not arrive whole within the body read timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyReadTimeout(Duration);

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

impl std::error::Error for BodyReadTimeout {}

pin_project! {
    /// A request body bounded in time as a whole, from the end of the head: a body that
    /// drips a byte a second never hits a per-read gap bound, but it hits this one. It also
    /// tells the connection whether it was read to its end.
    pub(crate) struct DeadlineBody {
        #[pin]
        inner: Incoming,
        deadline: Instant,
        timeout: Duration,
        // Made when a read first has to wait: most bodies arrive with their head.
        #[pin]
        timer: Option<Sleep>,
        read: ReadToEnd,
    }
}

/// Whether a request body was read to its end; it tells the connection when it was not.
struct ReadToEnd {
    done: bool,
    state: Arc<ConnState>,
}

impl Drop for ReadToEnd {
    fn drop(&mut self) {
        if !self.done {
            self.state.unread_body.store(true, Ordering::Release);
        }
    }
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, state: Arc<ConnState>) -> Self {
        let done = http_body::Body::is_end_stream(&inner);
        Self {
            inner,
            deadline: Instant::now() + timeout,
            timeout,
            timer: None,
            read: ReadToEnd { done, state },
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                if !matches!(frame, Some(Ok(_))) || this.inner.is_end_stream() {
                    this.read.done = true;
                }
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.timer.is_none() {
                    this.timer
                        .set(Some(tokio::time::sleep_until(*this.deadline)));
                }
                if let Some(timer) = this.timer.as_pin_mut()
                    && timer.poll(cx).is_ready()
                {
                    return Poll::Ready(Some(Err(BodyReadTimeout(*this.timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
