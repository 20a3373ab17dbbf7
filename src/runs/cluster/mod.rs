//! Several replicas on one PostgreSQL (`CLUSTER_ENABLED`). Each active run is leased to one
//! replica (`runs.owner_replica`), which alone observes its session and writes it: the store
//! fences every append of a replica to the runs leased to it or to none, so a replica that
//! lost a lease (paused past its TTL, cut off) is refused, never duplicates. A replica's lease
//! is its row in `replicas`, renewed every third of `LEASE_TTL_MS`; once it expires, the
//! survivors claim its runs, each up to an equal part of all active runs, and resume them as
//! recovery does (from the stored runtime ordinal). A replica that stops gracefully gives its
//! runs up at once.
//!
//! Every commit is announced (NOTIFY, in its transaction) and every replica LISTENs on a
//! connection of its own: `follow` feeds the local subscribers of other replicas' runs, and a
//! lost connection makes them all catch up from the store. Calls that write a run go to its
//! owner through the database (`calls`). Webhook delivery and data retention run on the one
//! replica that holds the leader lock (an advisory lock on a held connection). Discovery needs
//! no lock: a session has at most one run row (a unique column), so one replica's insert wins
//! and that replica owns the run.

mod calls;
mod follow;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

pub(crate) use calls::{Call, Route, answer};

use super::RunService;
use crate::error::ApiError;
use crate::store::{LiveReplica, Notification};

/// How a replica takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This replica's id (`REPLICA_ID`): stable across restarts to take its runs back at once.
    pub replica_id: String,
    /// How long a replica's lease outlives its last heartbeat (`LEASE_TTL_MS`).
    pub lease_ttl: Duration,
}

/// The settings, as `serve` reads them.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Run as one replica of several on one PostgreSQL: each active run is leased to one
    /// replica, live streams cross replicas, and any replica answers any request.
    #[arg(long, env = "CLUSTER_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub cluster_enabled: bool,

    /// This replica's id (letters, digits, `.`, `_`, `-`; at most 64). Keep it stable across
    /// restarts (a pod name) and a restarted replica takes its runs back at once; by default
    /// the host name and a random suffix.
    #[arg(long, env = "REPLICA_ID")]
    pub replica_id: Option<String>,

    /// How long a replica's lease outlives its last heartbeat (one every third of it), in ms:
    /// the runs of a replica that died are taken over after this.
    #[arg(long, env = "LEASE_TTL_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(300..=600_000))]
    pub lease_ttl_ms: u64,
}

impl ClusterArgs {
    /// The cluster settings, or `None` on a single process; refused on SQLite (one process
    /// owns a SQLite file) and for an id that could not travel in a notification.
    pub fn options(&self, database_url: &str) -> Result<Option<ClusterOptions>, String> {
        if !self.cluster_enabled {
            return Ok(None);
        }
        if !database_url.starts_with("postgres") {
            return Err(
                "CLUSTER_ENABLED needs a PostgreSQL DATABASE_URL (SQLite is one process's)"
                    .to_owned(),
            );
        }
        let replica_id = match &self.replica_id {
            Some(id) => id.clone(),
            None => {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "replica".to_owned());
                let host: String = host
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    .take(40)
                    .collect();
                format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            }
        };
        let valid = !replica_id.is_empty()
            && replica_id.len() <= 64
            && replica_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            return Err(format!(
                "REPLICA_ID {replica_id:?}: letters, digits, '.', '_' and '-' only, 1 to 64 of them"
            ));
        }
        Ok(Some(ClusterOptions {
            replica_id,
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
        }))
    }
}

/// A replica's share of the cluster's work, beside the run service.
pub(crate) struct Cluster {
    pub(crate) options: ClusterOptions,
    followers: follow::Followers,
    calls: calls::Waiting,
    leading: AtomicBool,
    /// The other replicas whose lease was current at the last heartbeat.
    others: Mutex<BTreeSet<String>>,
}

impl Cluster {
    pub(crate) fn new(options: ClusterOptions) -> Self {
        Cluster {
            options,
            followers: follow::Followers::default(),
            calls: calls::Waiting::default(),
            leading: AtomicBool::new(false),
            others: Mutex::default(),
        }
    }

    fn set_others(&self, others: &BTreeSet<String>) {
        others.clone_into(
            &mut self
                .others
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }

    /// Whether this replica is the one a new session is left to first: the live replica that
    /// ranks highest for it (rendezvous hashing, so every replica that sees the same live set
    /// picks the same one, and new sessions spread evenly).
    fn discovers_first(&self, session_id: &str) -> bool {
        let me = self.options.replica_id.as_str();
        let others = self
            .others
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let first = others
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(me))
            .max_by_key(|replica| (rank(session_id, replica), *replica));
        first == Some(me)
    }

    fn beat(&self) -> Duration {
        self.options.lease_ttl / 3
    }
}

/// A replica's rank for a session: FNV-1a over both ids, then SplitMix64's finalizer (FNV
/// alone barely mixes ids that differ in their last byte); the same in every process.
fn rank(session_id: &str, replica: &str) -> u64 {
    let hash = replica
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(session_id.bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// What `/readyz` says of the cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReadiness {
    pub replica_id: String,
    /// Whether this replica holds the leader lock (webhook delivery, data retention).
    pub leader: bool,
    /// The active runs leased to this replica.
    pub owned_runs: Vec<String>,
    /// The replicas whose lease is current, with how many runs each owns.
    pub replicas: Vec<LiveReplica>,
}

impl RunService {
    /// How long this replica leaves a session no run is known for to the replica it is left
    /// to first (`Cluster::discovers_first`): nothing when that is this one, or on a single
    /// process. Three replicas discovering every session at once made three store reads and
    /// three inserts of each, two of which waited for the first one's commit and then yielded,
    /// all in the burst of sessions starting together. The others discover it a beat later,
    /// which finds the run (one read) or, when that replica died or has not taken it, makes it.
    pub(crate) fn discovery_deferral(&self, session_id: &str) -> Option<Duration> {
        let cluster = self.inner.cluster.as_ref()?;
        (!cluster.discovers_first(session_id)).then(|| cluster.beat())
    }

    /// Joins the cluster: the lease first, then this replica's runs from an earlier life under
    /// the same id; the heartbeat (which claims orphaned runs), the listener and the contest
    /// for the leader lock run in the background.
    pub(super) async fn join_cluster(&self) -> Result<(), ApiError> {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return Ok(());
        };
        let store = self.store();
        let others = store.heartbeat(cluster.options.lease_ttl).await?;
        cluster.set_others(&others);
        for run in store.owned_runs().await? {
            self.spawn_recovery(run);
        }
        let tasks = &self.inner.tasks;
        tasks.spawn(self.clone().keep_lease(others));
        tasks.spawn(self.clone().listen());
        tasks.spawn(self.clone().contend_for_leadership());
        Ok(())
    }

    /// Renews the lease and takes over this replica's share of orphaned runs, every beat.
    /// When another replica's lease ends, whatever it committed but had not announced yet
    /// (it died in between) is caught up from the store.
    async fn keep_lease(self, mut others: BTreeSet<String>) {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return;
        };
        let shutdown = self.inner.shutdown.clone();
        let mut beats = tokio::time::interval(cluster.beat());
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = beats.tick() => {}
            }
            match self.store().heartbeat(cluster.options.lease_ttl).await {
                Ok(live) => {
                    if !others.is_subset(&live) {
                        cluster.followers.resynchronize(&self);
                    }
                    cluster.set_others(&live);
                    others = live;
                }
                Err(error) => {
                    tracing::warn!(%error, "lease heartbeat failed");
                    continue;
                }
            }
            match self.store().claim_orphaned_runs().await {
                Ok(runs) => {
                    for run in runs {
                        tracing::info!(run_id = %run.id, "taking over a run no live replica owns");
                        self.spawn_recovery(run);
                    }
                }
                Err(error) => tracing::warn!(%error, "claiming orphaned runs failed"),
            }
        }
    }

    /// Follows announcements of commits and calls; after a lost connection (whatever was
    /// announced meanwhile is gone) everything waiting on them reads the store again.
    async fn listen(self) {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return;
        };
        let me = cluster.options.replica_id.clone();
        let shutdown = self.inner.shutdown.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store().listen().await {
                Ok(mut listener) => {
                    backoff = Duration::from_millis(100);
                    self.resynchronize().await;
                    loop {
                        let next = tokio::select! {
                            () = shutdown.cancelled() => return,
                            next = listener.next() => next,
                        };
                        match next {
                            Ok(Some(Notification::Committed(committed))) => {
                                if committed.replica != me {
                                    // A run made by another replica: when it is a session's
                                    // (its id is the session's), the discovery this replica
                                    // has deferred need not look for it.
                                    if committed.first_seq == 1 {
                                        self.inner.discovered.insert(&committed.run_id);
                                    }
                                    cluster.followers.committed(&self, committed);
                                }
                            }
                            Ok(Some(Notification::Call { replica, id })) if replica == me => {
                                self.take_call(id);
                            }
                            Ok(Some(Notification::Answer { caller, id })) if caller == me => {
                                cluster.calls.answered(&id);
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => self.resynchronize().await,
                            Err(error) => {
                                tracing::warn!(%error, "the cluster's listening connection broke");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for the cluster's notifications")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(cluster.beat());
        }
    }

    /// What may have been announced while nobody listened is read from the store.
    async fn resynchronize(&self) {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return;
        };
        cluster.followers.resynchronize(self);
        cluster.calls.wake_all();
        match self.store().untaken_calls().await {
            Ok(ids) => ids.into_iter().for_each(|id| self.take_call(id)),
            Err(error) => tracing::warn!(%error, "reading calls left for this replica failed"),
        }
    }

    /// Holds the leader lock when nobody else does, and runs the once-per-cluster work while
    /// it holds it.
    async fn contend_for_leadership(self) {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return;
        };
        let shutdown = self.inner.shutdown.clone();
        loop {
            match self.store().try_lead().await {
                Ok(Some(mut leadership)) => {
                    tracing::info!("this replica leads the cluster");
                    cluster.leading.store(true, Ordering::Relaxed);
                    let leading = shutdown.child_token();
                    self.spawn_leader_work(&leading);
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(cluster.beat()) => {}
                        }
                        if let Err(error) = leadership.check().await {
                            tracing::warn!(%error, "the leader lock's connection broke");
                            break;
                        }
                    }
                    leading.cancel();
                    cluster.leading.store(false, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "contending for the leader lock failed"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(cluster.beat()) => {}
            }
        }
    }

    /// The work of one process, started on a single process and on a cluster's leader:
    /// webhook delivery, the dashboard's rollup folding (PostgreSQL) and data retention.
    pub(super) fn spawn_leader_work(&self, until: &tokio_util::sync::CancellationToken) {
        let webhooks = self.webhooks().clone();
        let (until_webhooks, tasks) = (until.clone(), self.inner.tasks.clone());
        self.inner
            .tasks
            .spawn(async move { webhooks.deliver(until_webhooks, tasks).await });
        if self.store().backend() == sea_orm::DbBackend::Postgres {
            self.inner
                .tasks
                .spawn(self.clone().keep_rollups(until.clone()));
        }
        if self.options().retention.enabled {
            self.inner
                .tasks
                .spawn(self.clone().keep_retention(until.clone()));
        }
    }

    /// Gives this replica's runs up at a graceful stop (after its background work ended), so
    /// the others take them over at their next beat.
    pub(super) async fn leave_cluster(&self) {
        if self.inner.cluster.is_none() {
            return;
        }
        match self.store().release_replica().await {
            Ok(released) => tracing::info!(released, "left the cluster"),
            Err(error) => {
                tracing::warn!(%error, "leaving the cluster failed; runs wait for the lease to expire")
            }
        }
    }

    /// Whether this process may work on the run: always on a single process; in a cluster
    /// unless another replica holds its lease (this one lost it).
    pub(super) async fn may_write(&self, run_id: &str) -> Result<bool, ApiError> {
        let Some(cluster) = self.inner.cluster.as_ref() else {
            return Ok(true);
        };
        let owner = self.store().run_owner(run_id).await?;
        Ok(owner
            .and_then(|owner| owner.replica)
            .is_none_or(|replica| replica == cluster.options.replica_id))
    }

    /// The cluster part of `/readyz`; `None` on a single process.
    pub(super) async fn cluster_readiness(&self) -> Option<ClusterReadiness> {
        let cluster = self.inner.cluster.as_ref()?;
        let store = self.store();
        let owned_runs = store.owned_run_ids().await.unwrap_or_default();
        Some(ClusterReadiness {
            replica_id: cluster.options.replica_id.clone(),
            leader: cluster.leading.load(Ordering::Relaxed),
            owned_runs,
            replicas: store.live_replicas().await.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_replica_leaves_a_session_to_the_same_one_and_sessions_spread() {
        let ids = ["replica-0", "replica-1", "replica-2"];
        let replicas: Vec<Cluster> = ids
            .iter()
            .map(|id| {
                let cluster = Cluster::new(ClusterOptions {
                    replica_id: (*id).to_owned(),
                    lease_ttl: Duration::from_secs(3),
                });
                let others = ids
                    .iter()
                    .filter(|other| *other != id)
                    .map(|other| (*other).to_owned())
                    .collect();
                cluster.set_others(&others);
                cluster
            })
            .collect();
        let mut firsts = [0_usize; 3];
        for n in 0..3_000 {
            let session = uuid::Uuid::from_u128(n * 0x9e37_79b9_7f4a_7c15).to_string();
            let first: Vec<usize> = (0..3)
                .filter(|index| replicas[*index].discovers_first(&session))
                .collect();
            assert_eq!(first.len(), 1, "session {session}: {first:?}");
            firsts[first[0]] += 1;
        }
        assert!(
            firsts.iter().all(|count| (800..=1_200).contains(count)),
            "{firsts:?}"
        );
        // Alone, a replica is first for everything.
        let alone = Cluster::new(ClusterOptions {
            replica_id: "replica-0".to_owned(),
            lease_ttl: Duration::from_secs(3),
        });
        assert!(alone.discovers_first("any"));
    }
}
