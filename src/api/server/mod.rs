//! The HTTP server behind the one listener: HTTP/1.1 and HTTP/2 (prior knowledge, as gRPC
//! clients speak it) on every connection, serving the router of REST, SSE, gRPC and grpc-web.
//!
//! One accept loop for both stacks (`crate::stack`): it caps open connections, and hyper-util's
//! connection builder carries the per-connection limits (`Limits`). A connection is then served
//! either by `turns` (its HTTP/2 streams polled in its own task, writes batched per turn) or by
//! the builder with its stock executor (a task per stream).

mod batched_io;
mod idle;
mod linger;
mod turns;

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::events::hub::Deliveries;

/// How a connection's requests are driven.
#[derive(Clone)]
pub enum Connections {
    /// `turns`, waiting for publications to finish waking subscribers (the ring hub's).
    Turns(Arc<Deliveries>),
    /// hyper-util's builder with `TokioExecutor`.
    Stock,
}

/// What one client may hold of the server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slow-loris): HTTP/1.1's each time the
    /// connection waits for one (so an idle keep-alive connection closes after it), and a
    /// connection's first request on either protocol, HTTP/2 preface included.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (gracefully), and one
    /// whose writes have not moved for this long is dropped.
    pub idle_timeout: Duration,
    /// HTTP/2 PING interval; a peer that does not answer within it is dropped.
    pub http2_keepalive: Duration,
    /// HTTP/2 streams (requests) open at once on one connection.
    pub http2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            http2_keepalive: Duration::from_secs(30),
            http2_max_concurrent_streams: 256,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets every connection
/// finish its open requests (HTTP/2 GOAWAY, HTTP/1.1 after the current response) and returns
/// once they have.
pub async fn serve(
    mut listener: TcpListener,
    router: Router,
    connections: Connections,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let limits = Arc::new(limits);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    // A set, so that a server that is aborted (its stop took too long) closes them all.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        // axum's accept retries transient errors (EMFILE and the like) after a pause.
        let socket = tokio::select! {
            (socket, _) = axum::serve::Listener::accept(&mut listener) => socket,
            () = shutdown.cancelled() => break,
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = open.clone().try_acquire_owned() else {
            // Closed at once rather than queued: a flood of connections costs a socket each
            // for a moment, never memory that grows with it.
            tracing::debug!(
                max = limits.max_connections,
                "connection refused: too many open"
            );
            continue;
        };
        let (router, connections, limits, shutdown) = (
            router.clone(),
            connections.clone(),
            limits.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            connection(socket, router, connections, limits, shutdown).await;
            drop(permit);
        });
    }
    // Refused from now on rather than left waiting in the backlog while the others finish.
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    socket: TcpStream,
    router: Router,
    connections: Connections,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) {
    // Without TCP_NODELAY, a small write after a large one waits for the peer's delayed ACK
    // (40 ms).
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY");
    }
    let activity = idle::Activity::new();
    let stop = idle::watch(shutdown, activity.clone(), limits.clone());
    let served = match connections {
        Connections::Turns(deliveries) => {
            turns::serve(socket, router, deliveries, &limits, activity, stop).await
        }
        Connections::Stock => stock(socket, router, &limits, activity, stop).await,
    };
    if let Err(error) = served {
        tracing::debug!(%error, "connection ended with an error");
    }
}

type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// hyper-util's connection with its stock executor: a task per HTTP/2 stream.
async fn stock(
    socket: TcpStream,
    router: Router,
    limits: &Limits,
    activity: idle::Activity,
    stop: impl Future<Output = idle::Stop>,
) -> Result<(), ServeError> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    configure(&mut builder, limits);
    let socket = linger::Lingering::new(socket);
    let io = TokioIo::new(idle::Tracked::new(socket, activity.clone()));
    let service = idle::Counted::new(TowerToHyperService::new(router.into_service()), activity);
    let mut connection = std::pin::pin!(builder.serve_connection(io, service));
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    std::future::poll_fn(|cx| {
        if !stopping && let Poll::Ready(how) = stop.as_mut().poll(cx) {
            stopping = true;
            match how {
                idle::Stop::Graceful => connection.as_mut().graceful_shutdown(),
                // Dropped with the connection future.
                idle::Stop::Now => return Poll::Ready(Ok(())),
            }
        }
        connection.as_mut().poll(cx)
    })
    .await
}

/// The per-connection limits, on either stack's builder.
pub(super) fn configure<E>(builder: &mut auto::Builder<E>, limits: &Limits) {
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive)
        .keep_alive_timeout(limits.http2_keepalive)
        .max_concurrent_streams(limits.http2_max_concurrent_streams);
}
