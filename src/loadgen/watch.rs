//! The control plane's side, through its public REST/SSE contract only: open
//! `GET /runs/{id}/stream` from the start, asking the control plane to wait for the session's
//! run to exist (`waitForRunMs`; one that does not wait answers 404 and is asked again, backing
//! off), follow it (`afterSeq`, resumed after the last seq on a reconnect), and note when each
//! message's `message.received` arrives. Told by the session what the runtime accepted and when it is
//! done, it stops once the run's terminal event and every accepted message were seen, or a
//! grace period after the last send.
//!
//! With several replicas each session is followed on the one its slot points at, without
//! asking who owns the run first: the owners are learnt on the side (`Owners`, every replica's
//! `/readyz` a few times a second) and the streams that crossed replicas are told apart after
//! the load. Asking before opening each stream put three `/readyz` calls (each a store and a
//! runtime round trip) per new session in the middle of the start-up burst, and their time
//! in front of every early message's latency.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::sse::{SseEvent, SseParser};
use super::{Error, Progress};

/// How long the control plane is asked to wait for a session's run before answering 404.
const RUN_WAIT: Duration = Duration::from_secs(10);
/// Asking again for a run a control plane did not wait for starts fast (discovery takes
/// milliseconds) and backs off, so hundreds of sessions waiting at once do not become a load
/// of their own.
const FIRST_POLL: Duration = Duration::from_millis(2);
const LONGEST_POLL: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Run statuses after which nothing more happens.
const TERMINAL_EVENTS: [&str; 3] = ["run.completed", "run.failed", "run.cancelled"];

/// How often every replica's owned runs are read while the load runs: often enough to see
/// the shortest session's run while it is active (`/readyz` lists active runs only).
const OWNERS_EVERY: Duration = Duration::from_millis(100);

/// The owners of the runs, learnt from the replicas' `/readyz` while the load runs.
pub struct Owners {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<HashMap<String, usize>>,
}

impl Owners {
    /// Starts reading the owners from `replicas`.
    pub fn watch(replicas: Vec<ControlPlane>) -> Owners {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut owners = HashMap::new();
            let mut ticks = tokio::time::interval(OWNERS_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stopped => return owners,
                    _ = ticks.tick() => {}
                }
                let lists =
                    futures::future::join_all(replicas.iter().map(ControlPlane::owned_runs)).await;
                for (replica, runs) in lists.into_iter().enumerate() {
                    for run in runs {
                        owners.insert(run, replica);
                    }
                }
            }
        });
        Owners { stop, task }
    }

    /// Stops; the owner last seen of every run seen active, by run id (an index into the
    /// replicas).
    pub async fn finish(self) -> HashMap<String, usize> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// What a session tells its watcher.
pub enum Note {
    /// The runtime accepted `message_id` at `at`; `measured` is false for the SessionStart,
    /// whose event arrives in the backfill once the run exists.
    Accepted {
        message_id: String,
        at: Instant,
        measured: bool,
    },
    /// The session sent its last envelope.
    Done(Instant),
}

/// One accepted message of a session, or a `message.received` no Accept was noted for.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub accepted: Option<Instant>,
    pub measured: bool,
    /// When its `message.received` first arrived on the stream.
    pub seen: Option<Instant>,
    pub times_seen: u32,
}

/// What the watcher of one session saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// From the SessionStart's Ack to the run's stream answering 200.
    pub found_after: Option<Duration>,
    pub messages: HashMap<String, Message>,
    /// The run's status at the end (`GET /runs/{id}`), if it could be read.
    pub status: Option<String>,
    /// Streams opened after the first (the connection ended before the run did).
    pub reconnects: u32,
    /// The last refusal or failure met (reported, not fatal).
    pub problem: Option<String>,
    /// Which of the control planes given the stream was followed on.
    pub followed: usize,
    /// The stream was followed on another replica than the one owning the run (several
    /// control planes given, and the owner seen in their `/readyz`); set after the load.
    pub crossed_replicas: bool,
}

/// The fields of a `canonical_event` that are read.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default)]
    data: WireData,
}

#[derive(Deserialize, Default)]
struct WireData {
    #[serde(rename = "messageId", default)]
    message_id: Option<String>,
}

/// A client of one control plane.
#[derive(Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    authorization: Option<HeaderValue>,
}

impl ControlPlane {
    pub fn new(base: &str, api_key: Option<&str>) -> Result<ControlPlane, Error> {
        let invalid =
            |message: String| Error::Argument(format!("--control-plane {base}: {message}"));
        let url = reqwest::Url::parse(base).map_err(|error| invalid(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("an http:// or https:// URL is needed".into()));
        }
        let authorization = match api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    // The key stays out of the message: it is a secret.
                    .map_err(|_| Error::Argument("--api-key: not a valid header value".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| invalid(super::chain(&error)))?;
        Ok(ControlPlane {
            http,
            base: base.trim_end_matches('/').to_owned(),
            authorization,
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(format!("{}{path}", self.base));
        match &self.authorization {
            Some(value) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Checks that the control plane answers and accepts the credential: a run that cannot
    /// exist must be a 404.
    pub async fn check(&self) -> Result<(), Error> {
        let path = format!("/runs/{}", uuid::Uuid::new_v4());
        let response = self.get(&path).send().await.map_err(|error| {
            Error::Unreachable(format!(
                "control plane at {}: {}",
                self.base,
                super::chain(&error)
            ))
        })?;
        match response.status().as_u16() {
            404 => Ok(()),
            401 | 403 => Err(Error::Refused(format!(
                "the control plane answered {} to GET {path}: check --api-key",
                response.status()
            ))),
            _ => Err(Error::Refused(format!(
                "the control plane answered {} to GET {path} (expected 404 for an unknown run)",
                response.status()
            ))),
        }
    }

    /// The active runs this replica owns (`/readyz` of a cluster); empty when it says none.
    async fn owned_runs(&self) -> Vec<String> {
        let Ok(response) = self.get("/readyz").send().await else {
            return Vec::new();
        };
        let Ok(body) = response.json::<serde_json::Value>().await else {
            return Vec::new();
        };
        body["cluster"]["ownedRuns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|run| run.as_str().map(str::to_owned))
            .collect()
    }

    /// Watches the run of `session_id` (see the module comment) through `control_plane`, the
    /// `followed`th of those given.
    pub async fn observe(
        self,
        followed: usize,
        session_id: String,
        started: Instant,
        notes: mpsc::UnboundedReceiver<Note>,
        grace: Duration,
        progress: std::sync::Arc<Progress>,
    ) -> Observed {
        let mut watcher = Watcher {
            control_plane: self,
            run_path: format!("/runs/{session_id}"),
            notes,
            notes_open: true,
            done: None,
            grace,
            observed: Observed {
                followed,
                ..Observed::default()
            },
            progress,
            last_seq: 0,
            terminal_seen: false,
        };
        if let Some(stream) = watcher.find(started).await {
            watcher.follow(stream).await;
        }
        watcher.finish().await
    }
}

struct Watcher {
    control_plane: ControlPlane,
    run_path: String,
    notes: mpsc::UnboundedReceiver<Note>,
    notes_open: bool,
    done: Option<Instant>,
    grace: Duration,
    observed: Observed,
    progress: std::sync::Arc<Progress>,
    last_seq: i64,
    terminal_seen: bool,
}

impl Watcher {
    fn time_up(&self) -> Option<Instant> {
        self.done.map(|done| done + self.grace)
    }

    fn note(&mut self, note: Option<Note>) {
        match note {
            Some(Note::Accepted {
                message_id,
                at,
                measured,
            }) => {
                let message = self.observed.messages.entry(message_id).or_default();
                message.accepted = Some(at);
                message.measured = measured;
            }
            Some(Note::Done(at)) => self.done = Some(at),
            // The session is gone without saying it was done (it panicked): done now.
            None => {
                self.notes_open = false;
                self.done.get_or_insert_with(Instant::now);
            }
        }
    }

    /// The run's stream once the run exists, taking notes meanwhile; `None` when time ran out
    /// first.
    async fn find(&mut self, started: Instant) -> Option<reqwest::Response> {
        let mut pause = FIRST_POLL;
        loop {
            let request = self.request(Some(RUN_WAIT)).send();
            tokio::pin!(request);
            let answer = loop {
                let deadline = self.time_up();
                tokio::select! {
                    answer = &mut request => break answer,
                    note = self.notes.recv(), if self.notes_open => self.note(note),
                    () = sleep_until_some(deadline), if deadline.is_some() => return None,
                }
            };
            match answer {
                Ok(response) if response.status().is_success() => {
                    self.observed.found_after = Some(started.elapsed());
                    return Some(response);
                }
                Ok(response) if response.status().as_u16() != 404 => {
                    self.observed.problem = Some(format!(
                        "GET {}/stream: {}",
                        self.run_path,
                        response.status()
                    ));
                }
                Ok(_) => {}
                Err(error) => {
                    self.observed.problem = Some(format!(
                        "GET {}/stream: {}",
                        self.run_path,
                        super::chain(&error)
                    ));
                }
            }
            let wake = Instant::now() + pause;
            pause = pause.mul_f32(1.5).min(LONGEST_POLL);
            loop {
                if self
                    .time_up()
                    .is_some_and(|deadline| Instant::now() >= deadline)
                {
                    return None;
                }
                tokio::select! {
                    note = self.notes.recv(), if self.notes_open => self.note(note),
                    () = tokio::time::sleep_until(wake) => break,
                }
            }
        }
    }

    /// Whether every message the runtime accepted has been seen.
    fn all_seen(&self) -> bool {
        self.observed
            .messages
            .values()
            .all(|message| message.accepted.is_none() || message.seen.is_some())
    }

    /// The run's stream after the last seq seen; `wait`: how long the control plane is asked
    /// to wait for the run to exist.
    fn request(&self, wait: Option<Duration>) -> reqwest::RequestBuilder {
        let mut path = format!(
            "{}/stream?afterSeq={}&includeSnapshot=false&endAtTerminal=true",
            self.run_path, self.last_seq
        );
        if let Some(wait) = wait {
            path.push_str(&format!("&waitForRunMs={}", wait.as_millis()));
        }
        self.control_plane
            .get(&path)
            .header(ACCEPT, "text/event-stream")
    }

    async fn open(&mut self) -> Option<reqwest::Response> {
        let path = format!("{}/stream", self.run_path);
        match self.request(None).send().await {
            Ok(response) if response.status().is_success() => Some(response),
            Ok(response) => {
                self.observed.problem = Some(format!("GET {path}: {}", response.status()));
                None
            }
            Err(error) => {
                self.observed.problem = Some(format!("GET {path}: {}", super::chain(&error)));
                None
            }
        }
    }

    async fn follow(&mut self, first: reqwest::Response) {
        let mut stream = Some(first);
        let mut reopen_at = Instant::now();
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        loop {
            if self.done.is_some() && self.terminal_seen && self.all_seen() {
                return;
            }
            let deadline = self.time_up();
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return;
            }
            // After the run's end, a stream that closed is opened again only to look for
            // messages still unseen once the session is done.
            let want_stream = stream.is_none()
                && (!self.terminal_seen || (self.done.is_some() && !self.all_seen()));
            tokio::select! {
                chunk = next_chunk(&mut stream), if stream.is_some() => match chunk {
                    Some(bytes) => {
                        let at = Instant::now();
                        parser.push(&bytes, &mut events);
                        for event in events.drain(..) {
                            self.event(event, at);
                        }
                    }
                    None => {
                        stream = None;
                        parser = SseParser::default();
                        reopen_at = Instant::now() + Duration::from_millis(50);
                    }
                },
                note = self.notes.recv(), if self.notes_open => self.note(note),
                () = tokio::time::sleep_until(reopen_at), if want_stream => {
                    match self.open().await {
                        Some(response) => {
                            self.observed.reconnects += 1;
                            stream = Some(response);
                        }
                        None => reopen_at = Instant::now() + Duration::from_millis(100),
                    }
                }
                () = sleep_until_some(deadline), if deadline.is_some() => return,
            }
        }
    }

    fn event(&mut self, event: SseEvent, at: Instant) {
        if event.event != "canonical_event" {
            return;
        }
        let Ok(wire) = serde_json::from_str::<WireEvent>(&event.data) else {
            self.observed.problem = Some("a canonical_event whose data is not an event".into());
            return;
        };
        let seq = event
            .id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .or(wire.seq);
        if let Some(seq) = seq {
            self.last_seq = self.last_seq.max(seq);
        }
        if TERMINAL_EVENTS.contains(&wire.kind.as_str()) {
            self.terminal_seen = true;
        }
        if wire.kind != "message.received" {
            return;
        }
        let Some(message_id) = wire.data.message_id else {
            return;
        };
        let message = self.observed.messages.entry(message_id).or_default();
        message.times_seen += 1;
        if message.seen.is_none() {
            message.seen = Some(at);
            self.progress.seen();
        }
    }

    /// Drains the notes still queued, and reads the run's final status.
    async fn finish(mut self) -> Observed {
        while let Ok(note) = self.notes.try_recv() {
            self.note(Some(note));
        }
        if self.observed.found_after.is_some() {
            match self.control_plane.get(&self.run_path).send().await {
                Ok(response) if response.status().is_success() => {
                    #[derive(Deserialize)]
                    struct Run {
                        status: Option<String>,
                    }
                    self.observed.status =
                        response.json::<Run>().await.ok().and_then(|run| run.status);
                }
                Ok(response) => {
                    self.observed.problem =
                        Some(format!("GET {}: {}", self.run_path, response.status()));
                }
                Err(error) => {
                    self.observed.problem =
                        Some(format!("GET {}: {}", self.run_path, super::chain(&error)));
                }
            }
        }
        self.observed
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The next chunk of the stream; `None` when it ended or failed.
async fn next_chunk(stream: &mut Option<reqwest::Response>) -> Option<bytes::Bytes> {
    match stream {
        Some(response) => response.chunk().await.ok().flatten(),
        None => std::future::pending().await,
    }
}
