//! A connection's HTTP/2 streams run inside the connection's own task (`ConnectionStreams`,
//! `Turns`), not one task each. An event published to a run with thousands of subscribers then
//! wakes each connection once rather than each stream, the streams of a connection never contend
//! for its lock from two threads, and a turn polls all the streams that are ready before the
//! connection encodes their frames and the turn writes them (`batched_io`) in one write. Request
//! handlers still run in tasks of their own (`Handlers`), so a busy client's requests use every
//! core; only the polling of response bodies, where fan-out happens, stays with the connection.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, Version};
use axum::response::IntoResponse;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::batched_io::{BatchedIo, Outgoing};
use super::idle::{Activity, Counted, Stop, Tracked};
use super::linger::Lingering;
use super::{Limits, ServeError, configure};
use crate::api::http::HttpError;
use crate::error::ApiError;
use crate::events::hub::Deliveries;

/// Serves one connection: its HTTP/2 streams polled in this task, its writes batched per turn.
pub(super) async fn serve(
    socket: TcpStream,
    router: Router,
    deliveries: Arc<Deliveries>,
    limits: &Limits,
    activity: Activity,
    stop: impl Future<Output = Stop>,
) -> Result<(), ServeError> {
    let (read, write) = socket.into_split();
    // The socket's own writes tell whether the client still reads; the batch's do not. The
    // write half sends FIN when dropped; the read half lingers.
    let read = Lingering::new(read);
    let (io, outgoing) = BatchedIo::new(read, Tracked::new(write, activity.clone()));
    let streams = ConnectionStreams::default();
    let mut builder = auto::Builder::new(streams.clone());
    configure(&mut builder, limits);
    let handlers = Counted::new(Handlers { router }, activity);
    let mut connection = pin!(builder.serve_connection(TokioIo::new(io), handlers));
    let mut turns = Turns {
        streams,
        running: Running::default(),
        deliveries,
        deferred: 0,
        outgoing,
    };
    let mut stop = pin!(stop);
    let mut draining = false;
    std::future::poll_fn(|cx| {
        if !draining && let Poll::Ready(how) = stop.as_mut().poll(cx) {
            draining = true;
            match how {
                Stop::Graceful => connection.as_mut().graceful_shutdown(),
                // Dropped with the connection future, streams included.
                Stop::Now => return Poll::Ready(Ok(())),
            }
        }
        turns.poll(cx, connection.as_mut())
    })
    .await
}

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor hyper hands a connection's HTTP/2 stream futures to: it keeps them for the
/// connection's task, which polls them (`Turns::poll`) before the connection itself.
#[derive(Clone, Default)]
struct ConnectionStreams {
    shared: Arc<Spawned>,
}

#[derive(Default)]
struct Spawned {
    futures: Mutex<Vec<StreamFuture>>,
    /// The connection's task, woken for a stream handed over outside its own poll.
    task: AtomicWaker,
}

impl<F> hyper::rt::Executor<F> for ConnectionStreams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        // A stream that panics ends alone, as it would in a task of its own: its connection and
        // the connection's other streams go on. Outside tokio's cooperative budget, which is
        // per task: a hundred streams sharing one would find it spent and report every timer
        // and join handle not ready (a turn's work is bounded by `MAX_ROUNDS` instead).
        let future = AssertUnwindSafe(tokio::task::unconstrained(future))
            .catch_unwind()
            .map(|outcome| {
                if outcome.is_err() {
                    tracing::error!("an HTTP/2 stream panicked");
                }
            });
        self.shared
            .futures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::pin(future));
        self.shared.task.wake();
    }
}

/// Turns in a row a connection waits for publications to finish waking subscribers.
const MAX_DEFERRALS: u8 = 4;

/// A connection's task: its streams, the connection, and its writes.
struct Turns<W> {
    streams: ConnectionStreams,
    running: Running,
    deliveries: Arc<Deliveries>,
    /// Turns put off in a row while publications were waking subscribers.
    deferred: u8,
    outgoing: Outgoing<W>,
}

impl<W: AsyncWrite + Unpin> Turns<W> {
    /// One turn: the ready streams, then the connection (which encodes what they produced and
    /// accepts new streams), until nothing new was handed over; then the turn's writes, at
    /// once. While a publication is waking subscribers, more of the streams of a connection
    /// that has some are about to be ready (they are spread over the subscriber list), so the
    /// turn waits for the end of it (a few turns in a row at most: a hub that publishes
    /// without pause does not hold a connection back).
    fn poll<C: Future>(
        &mut self,
        cx: &mut Context<'_>,
        mut connection: Pin<&mut C>,
    ) -> Poll<C::Output> {
        if self.deferred < MAX_DEFERRALS
            && !self.running.futures.is_empty()
            && self.deliveries.poll_idle(cx).is_pending()
        {
            self.deferred += 1;
            return Poll::Pending;
        }
        self.deferred = 0;
        self.streams.shared.task.register(cx.waker());
        let done = loop {
            self.running.poll_ready(cx);
            let done = connection.as_mut().poll(cx);
            let spawned = std::mem::take(
                &mut *self
                    .streams
                    .shared
                    .futures
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            // A connection that has ended has no streams left to serve (HTTP/2 ends only
            // after its streams, or when the peer is gone).
            if done.is_ready() || spawned.is_empty() {
                break done;
            }
            self.running.futures.extend(spawned);
        };
        // A socket that takes no more wakes the task when it does; a failed write is the
        // connection's to learn, at its next write, in a turn of its own.
        if let Poll::Ready(Err(_)) = self.outgoing.poll_write_out(cx)
            && done.is_pending()
        {
            cx.waker().wake_by_ref();
        }
        done
    }
}

/// Rounds of its streams a turn polls at most (each stream sends at most a frame or two a
/// round), so that a connection does not hold a worker for long.
const MAX_ROUNDS: usize = 64;

/// A connection's stream futures. FuturesUnordered yields (waking the task) once two of the
/// futures it polled woke themselves, which hyper's stream futures do for every frame they
/// send; polled through `Rewake`, a turn learns of it and polls another round instead of
/// ending, so the connection writes once for all the streams that were ready.
#[derive(Default)]
struct Running {
    futures: FuturesUnordered<StreamFuture>,
    rewake: Arc<Rewake>,
}

#[derive(Default)]
struct Rewake {
    /// The connection's task.
    task: AtomicWaker,
    /// A stream is ready (FuturesUnordered woke its task).
    woken: AtomicBool,
    /// A turn is polling the streams, and will look at `woken` before it ends.
    polling: AtomicBool,
}

impl std::task::Wake for Rewake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

impl Running {
    /// Polls the streams that are ready, and those that become ready meanwhile, in rounds.
    fn poll_ready(&mut self, cx: &mut Context<'_>) {
        let rewake = &self.rewake;
        rewake.task.register(cx.waker());
        let waker = Waker::from(rewake.clone());
        let mut streams = Context::from_waker(&waker);
        rewake.polling.store(true, Ordering::SeqCst);
        for _ in 0..MAX_ROUNDS {
            rewake.woken.store(false, Ordering::SeqCst);
            while let Poll::Ready(Some(())) = self.futures.poll_next_unpin(&mut streams) {}
            if !rewake.woken.load(Ordering::SeqCst) {
                break;
            }
        }
        // Woken after the last look (or still ready after the last round): another turn.
        rewake.polling.store(false, Ordering::SeqCst);
        if rewake.woken.load(Ordering::SeqCst) {
            cx.waker().wake_by_ref();
        }
    }
}

/// The router as hyper's service. HTTP/2 requests are handled in a task of their own, as hyper
/// would spawn them; the response body comes back to the connection's task. HTTP/1.1 requests
/// are handled inline, one at a time per connection anyway.
#[derive(Clone)]
struct Handlers {
    router: Router,
}

impl hyper::service::Service<Request<Incoming>> for Handlers {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let spawn = request.version() == Version::HTTP_2;
        let handled = self.router.clone().oneshot(request.map(Body::new));
        if !spawn {
            return Box::pin(handled);
        }
        let mut handler = AbortOnDrop(tokio::spawn(handled));
        Box::pin(async move {
            match (&mut handler.0).await {
                Ok(handled) => handled,
                Err(error) => Ok(HttpError(ApiError::internal(format!(
                    "the request handler failed: {error}"
                )))
                .into_response()),
            }
        })
    }
}

/// A spawned handler is cancelled when its stream goes away, as an inline one would be.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use hyper::rt::Executor;

    use super::*;

    type Duplex = tokio::io::WriteHalf<tokio::io::DuplexStream>;

    fn turns(deliveries: Arc<Deliveries>) -> (Turns<Duplex>, tokio::io::DuplexStream) {
        let (near, far) = tokio::io::duplex(1 << 16);
        let (read, write) = tokio::io::split(near);
        let (_, outgoing) = BatchedIo::new(read, write);
        let turns = Turns {
            streams: ConnectionStreams::default(),
            running: Running::default(),
            deliveries,
            deferred: 0,
            outgoing,
        };
        (turns, far)
    }

    /// A stream that panics ends alone: the connection's task and its other streams go on.
    #[tokio::test]
    async fn a_stream_that_panics_ends_alone() {
        let (mut turns, _far) = turns(Arc::default());
        let finished = Arc::new(AtomicBool::new(false));
        turns.streams.execute(async { panic!("a handler bug") });
        let done = finished.clone();
        turns.streams.execute(async move {
            tokio::task::yield_now().await;
            done.store(true, Ordering::SeqCst);
        });
        // The connection ends once the other stream has finished.
        let mut connection = pin!(std::future::poll_fn(|_| {
            if finished.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        std::future::poll_fn(|cx| turns.poll(cx, connection.as_mut())).await;
        assert!(finished.load(Ordering::SeqCst));
    }

    /// While a publication wakes subscribers, a connection with streams waits, and is woken
    /// when it ends; a few turns in a row at most. A connection without streams does not wait.
    #[test]
    fn a_turn_waits_while_a_publication_wakes_subscribers() {
        let deliveries = Arc::new(Deliveries::default());
        let (mut turns, _far) = turns(deliveries.clone());
        let polls = AtomicUsize::new(0);
        let mut connection = pin!(std::future::poll_fn(|_| {
            polls.fetch_add(1, Ordering::SeqCst);
            Poll::<()>::Pending
        }));
        let woken = Arc::new(WakeFlag::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);

        let polled = || polls.load(Ordering::SeqCst);
        let delivering = deliveries.begin();
        assert!(turns.poll(&mut cx, connection.as_mut()).is_pending());
        assert_eq!(polled(), 1, "no streams: no wait");
        drop(delivering);
        turns.streams.execute(std::future::pending());
        assert!(turns.poll(&mut cx, connection.as_mut()).is_pending());
        let before = polled();

        let delivering = deliveries.begin();
        assert!(turns.poll(&mut cx, connection.as_mut()).is_pending());
        assert_eq!(polled(), before, "the connection waits");
        woken.0.store(false, Ordering::SeqCst);
        drop(delivering);
        assert!(
            woken.0.load(Ordering::SeqCst),
            "woken when the publication ends"
        );
        assert!(turns.poll(&mut cx, connection.as_mut()).is_pending());
        assert_eq!(polled(), before + 1);

        let _delivering = deliveries.begin();
        for _ in 0..MAX_DEFERRALS {
            assert!(turns.poll(&mut cx, connection.as_mut()).is_pending());
        }
        assert_eq!(polled(), before + 1);
        assert!(turns.poll(&mut cx, connection.as_mut()).is_pending());
        assert_eq!(polled(), before + 2, "not held back any longer");
    }

    #[derive(Default)]
    struct WakeFlag(AtomicBool);

    impl std::task::Wake for WakeFlag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
