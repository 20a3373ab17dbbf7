//! One `WatchSessions` stream per process: lifecycle events (resolved, expired, cancelled,
//! suspended, resumed) are handed to the observer of the session's run, and a session no run is
//! for becomes one (discovery). On reconnect the runtime replays the current state of every
//! session it holds, so nothing is missed, and nothing is made twice. And one `WatchSignals`
//! stream: ambient Signals go to the runs they correlate with.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use macp_runtime::pb::SessionMetadata;
use tokio::sync::Semaphore;
use tokio_stream::StreamExt;

use super::service::RunService;
use crate::runtime::Error as RuntimeError;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub async fn watch_sessions(service: RunService) {
    let discovering = Discovering::default();
    follow(
        &service,
        "session",
        Some(&service.inner.sessions_watched),
        |service| async move { service.runtime().watch_sessions().await },
        |service, response| {
            if let Some(session) = response.event.and_then(|event| event.session) {
                discovering.route(&service, session);
            }
            std::future::ready(())
        },
    )
    .await;
}

/// Sessions being made into runs, each with the lifecycle events that arrived meanwhile.
/// Discovery takes a few milliseconds of store work per session; done one at a time in the
/// watch loop, 100 sessions opening within a second left the last of them waiting for the other
/// 99 (and their first messages late on the streams). So each new session is discovered by a
/// task of its own, at most `DISCOVERY_CONCURRENCY` at once, while its later events queue behind
/// it: one session's events are still handled in the order the runtime sent them.
#[derive(Clone)]
struct Discovering {
    queues: Arc<Mutex<HashMap<String, VecDeque<SessionMetadata>>>>,
    permits: Arc<Semaphore>,
}

/// Sessions discovered at once at most (each is a store read and a transaction).
const DISCOVERY_CONCURRENCY: usize = 16;

impl Default for Discovering {
    fn default() -> Self {
        Discovering {
            queues: Arc::default(),
            permits: Arc::new(Semaphore::new(DISCOVERY_CONCURRENCY)),
        }
    }
}

impl Discovering {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<SessionMetadata>>> {
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a session's event on: behind its discovery when one is under way, to a new
    /// discovery when the session has no run here yet, else straight to its observer.
    fn route(&self, service: &RunService, session: SessionMetadata) {
        let mut queues = self.queues();
        if let Some(queue) = queues.get_mut(&session.session_id) {
            queue.push_back(session);
            return;
        }
        let known = service.is_observed(&session.session_id)
            || service.inner.discovered.contains(&session.session_id);
        if !service.options().discovery || known {
            drop(queues);
            service.signal_session(session);
            return;
        }
        queues.insert(session.session_id.clone(), VecDeque::new());
        drop(queues);
        let (discovering, service) = (self.clone(), service.clone());
        service
            .inner
            .tasks
            .clone()
            .spawn(async move { discovering.discover(service, session).await });
    }

    /// Discovers the session, then hands on its events that queued meanwhile, in order (a
    /// session already made a run returns from `discover` at once).
    async fn discover(self, service: RunService, first: SessionMetadata) {
        let session_id = first.session_id.clone();
        if let Some(deferral) = service.discovery_deferral(&session_id) {
            let shutdown = service.inner.shutdown.clone();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(deferral) => {}
            }
        }
        let mut next = Some(first);
        while let Some(session) = next {
            {
                let _permit = self.permits.acquire().await;
                if let Err(error) = super::discovery::discover(&service, &session).await {
                    tracing::warn!(%session_id, %error, "session discovery failed; retried when the session is seen again");
                }
            }
            service.signal_session(session);
            next = self.next_queued(&session_id);
        }
    }

    /// The session's next queued event; when there is none its queue is removed, under the
    /// lock `route` takes, so no event is left behind in it.
    fn next_queued(&self, session_id: &str) -> Option<SessionMetadata> {
        let mut queues = self.queues();
        let next = queues.get_mut(session_id).and_then(VecDeque::pop_front);
        if next.is_none() {
            queues.remove(session_id);
        }
        next
    }
}

pub async fn watch_signals(service: RunService) {
    follow(
        &service,
        "signal",
        None,
        |service| async move { service.runtime().watch_signals().await },
        |service, response| async move {
            if let Some(envelope) = response.envelope
                && let Err(error) = super::discovery::ambient(&service, envelope).await
            {
                tracing::warn!(%error, "an ambient signal could not be stored");
            }
        },
    )
    .await;
}

/// Follows one of the runtime's watch streams until shutdown: each item handled in order,
/// reconnecting with backoff whenever the stream ends or cannot be opened; `open_now` says
/// whether the stream is open.
async fn follow<T, Open, Opened, Handle, Handled>(
    service: &RunService,
    what: &'static str,
    open_now: Option<&std::sync::atomic::AtomicBool>,
    open: Open,
    handle: Handle,
) where
    Open: Fn(RunService) -> Opened,
    Opened: Future<Output = Result<tonic::Streaming<T>, RuntimeError>>,
    Handle: Fn(RunService, T) -> Handled,
    Handled: Future<Output = ()>,
{
    let shutdown = service.inner.shutdown.clone();
    let mut backoff = BACKOFF_START;
    let set_open = |open: bool| {
        if let Some(flag) = open_now {
            flag.store(open, std::sync::atomic::Ordering::Relaxed);
        }
    };
    loop {
        let opened = open(service.clone()).await;
        set_open(opened.is_ok());
        match opened {
            Ok(mut stream) => loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    item = stream.next() => match item {
                        Some(Ok(response)) => {
                            backoff = BACKOFF_START;
                            handle(service.clone(), response).await;
                        }
                        Some(Err(status)) => {
                            tracing::info!(code = ?status.code(), message = status.message(), "{what} watch ended; reconnecting");
                            break;
                        }
                        None => break,
                    }
                }
            },
            Err(error) => tracing::debug!(%error, "cannot watch runtime {what}s; retrying"),
        }
        set_open(false);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
