//! When a connection is done with: it never sent a request within the header-read timeout of
//! opening (a slow or silent client, HTTP/2 preface included), it has had no request in flight
//! for the idle timeout (keepalive PINGs do not count), or its writes have not moved for the idle
//! timeout (a client that stopped reading, an SSE stream included). Activity is counted per
//! request (`Counted`, whose response body ends the request when it is dropped) and per
//! socket write (`Tracked`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Limits;

/// How a connection is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Shutdown, or idle: stop taking requests, finish those in flight.
    Graceful,
    /// A client that never sent a request, or stopped reading: drop the connection.
    Now,
}

/// A connection's requests and writes, with times in ms after it opened.
#[derive(Clone)]
pub(super) struct Activity {
    opened: Instant,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Requests received so far.
    requests: AtomicU64,
    in_flight: AtomicUsize,
    /// When the last request started or ended.
    last_ms: AtomicU64,
    /// When a write last found the socket full, plus one; 0 while writes go through.
    stalled_since_ms: AtomicU64,
    /// Told when what is due may have come closer: the first request, the last one ending, a
    /// write stalling.
    changed: Notify,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            opened: Instant::now(),
            state: Arc::default(),
        }
    }

    /// Now, in ms after the connection opened, rounded up: a connection is never taken for
    /// idle or stalled before it is.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis() + 1).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// A request, until the guard is dropped.
    fn begin(&self) -> InFlight {
        let first = self.state.requests.fetch_add(1, Ordering::AcqRel) == 0;
        self.state.in_flight.fetch_add(1, Ordering::AcqRel);
        self.state.last_ms.store(self.now_ms(), Ordering::Release);
        if first {
            self.state.changed.notify_one();
        }
        InFlight(self.clone())
    }

    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        let stalled = &self.state.stalled_since_ms;
        match polled {
            Poll::Pending => {
                if stalled
                    .compare_exchange(0, self.now_ms(), Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.state.changed.notify_one();
                }
            }
            Poll::Ready(Ok(written)) if *written > 0 => stalled.store(0, Ordering::Release),
            Poll::Ready(_) => {}
        }
    }

    /// When the connection is due to stop, and how; `None` while nothing can be due before
    /// `now + idle` (a request in flight whose writes go through).
    fn due(&self, limits: &Limits) -> Option<(Instant, Stop)> {
        let state = &self.state;
        if state.requests.load(Ordering::Acquire) == 0 {
            return Some((self.opened + limits.header_read_timeout, Stop::Now));
        }
        match state.stalled_since_ms.load(Ordering::Acquire) {
            0 => {}
            since => return Some((self.at(since) + limits.idle_timeout, Stop::Now)),
        }
        (state.in_flight.load(Ordering::Acquire) == 0).then(|| {
            let last = self.at(state.last_ms.load(Ordering::Acquire));
            (last + limits.idle_timeout, Stop::Graceful)
        })
    }
}

/// Ends a request when dropped (with its response body, or its handler if it went first).
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0.state;
        state.last_ms.store(self.0.now_ms(), Ordering::Release);
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            state.changed.notify_one();
        }
    }
}

/// Resolves when the connection is to stop: at shutdown, or as [`Activity::due`] says.
pub(super) async fn watch(
    shutdown: CancellationToken,
    activity: Activity,
    limits: Arc<Limits>,
) -> Stop {
    let due = async {
        loop {
            let now = Instant::now();
            let (at, stop) = activity
                .due(&limits)
                .unwrap_or((now + limits.idle_timeout, Stop::Graceful));
            if at <= now {
                tracing::debug!(?stop, "closing an idle or stalled connection");
                return stop;
            }
            // A change stores a permit when nobody waits: none is missed between the look
            // above and this wait.
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = activity.state.changed.notified() => {}
            }
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => Stop::Graceful,
        stop = due => stop,
    }
}

/// A connection's hyper service, counting its requests.
#[derive(Clone)]
pub(super) struct Counted<S> {
    inner: S,
    activity: Activity,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, activity: Activity) -> Self {
        Counted { inner, activity }
    }
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, B> hyper::service::Service<Request<B>> for Counted<S>
where
    S: hyper::service::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let in_flight = self.activity.begin();
        let answered = self.inner.call(request);
        Box::pin(async move {
            let response = answered.await?;
            Ok(response.map(|inner| {
                Body::new(Counting {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that ends its request when dropped.
struct Counting {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Counting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose writes tell the connection's activity when they stall.
pub(super) struct Tracked<T> {
    inner: T,
    activity: Activity,
}

impl<T> Tracked<T> {
    pub(super) fn new(inner: T, activity: Activity) -> Self {
        Tracked { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.activity.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.activity.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            ..Limits::default()
        }
    }

    #[test]
    fn what_is_due_follows_requests_and_writes() {
        let limits = limits();
        let activity = Activity::new();
        assert_eq!(
            activity.due(&limits),
            Some((activity.opened + limits.header_read_timeout, Stop::Now)),
            "no request yet: the first one is due within the header timeout"
        );
        let request = activity.begin();
        assert_eq!(activity.due(&limits), None, "a request in flight");
        activity.wrote(&Poll::Pending);
        let stalled = Instant::now();
        let (at, stop) = activity.due(&limits).expect("due");
        assert_eq!(stop, Stop::Now, "a write that does not move");
        assert!(
            at >= stalled + limits.idle_timeout
                && at <= stalled + limits.idle_timeout + Duration::from_millis(2)
        );
        activity.wrote(&Poll::Ready(Ok(10)));
        assert_eq!(activity.due(&limits), None, "it moved again");
        drop(request);
        let ended = Instant::now();
        let (at, stop) = activity.due(&limits).expect("due");
        assert_eq!(stop, Stop::Graceful, "idle after its last request");
        assert!(
            at >= ended + limits.idle_timeout
                && at <= ended + limits.idle_timeout + Duration::from_millis(2)
        );
    }
}
