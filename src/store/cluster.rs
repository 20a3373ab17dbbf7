//! Several replicas on one PostgreSQL (`runs/cluster/`): each replica's lease (its row in
//! `replicas`, renewed by a heartbeat, expiring `LEASE_TTL_MS` after the last), the replica
//! that owns each active run (`runs.owner_replica`), the notification every commit sends, and
//! the calls one replica hands to the owner of a run (`replica_calls`). Times are the
//! database's (`now()`), so the replicas' clocks never have to agree.

use std::collections::BTreeSet;
use std::time::Duration;

use sea_orm::sqlx::postgres::PgListener;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait, UpdateMany, Value as DbValue, sea_query::Condition,
    sea_query::Expr,
};
use serde_json::Value;
use tokio::sync::mpsc;

use super::entities::run;
use super::{Error, Store, run_from_row};
use crate::domain::run::Run;
use crate::domain::status::RunStatus;
use crate::events::canonical::CanonicalEvent;

/// Where commits are announced: `<replica>|<run>|<first seq>|<last seq>`, then `|` and the
/// events as a JSON array when they fit in a notification.
pub const EVENTS_CHANNEL: &str = "macp_cp_events";
/// Where calls and their answers are announced: `call|<replica>|<id>`, `answer|<caller>|<id>`.
pub const CALLS_CHANNEL: &str = "macp_cp_calls";

/// The longest payload PostgreSQL takes is 7,999 bytes; the events go along below this.
const CARRIED_PAYLOAD: usize = 7_900;

/// A commit of a run's events, as announced to the other replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub replica: String,
    pub run_id: String,
    pub first_seq: i64,
    pub last_seq: i64,
    /// The events' JSON when it fitted in the announcement (most commits: a message or two),
    /// so that a follower need not read them back. Decoded (`events`) only where somebody
    /// follows the run: every replica hears every commit, its own included.
    events: Option<String>,
}

impl Committed {
    fn payload(replica: &str, run_id: &str, events: &[CanonicalEvent]) -> Option<String> {
        let (first, last) = (events.first()?.seq, events.last()?.seq);
        let head = format!("{replica}|{run_id}|{first}|{last}");
        match serde_json::to_string(events) {
            Ok(json) if head.len() + 1 + json.len() <= CARRIED_PAYLOAD => {
                Some(format!("{head}|{json}"))
            }
            _ => Some(head),
        }
    }

    fn parse(payload: &str) -> Option<Committed> {
        let mut parts = payload.splitn(5, '|');
        let committed = Committed {
            replica: parts.next()?.to_owned(),
            run_id: parts.next()?.to_owned(),
            first_seq: parts.next()?.parse().ok()?,
            last_seq: parts.next()?.parse().ok()?,
            events: parts.next().map(str::to_owned),
        };
        Some(committed)
    }

    /// The events the announcement carried; `None` when it carried none, or none that decode
    /// (the follower reads the store instead).
    pub fn events(&self) -> Option<Vec<CanonicalEvent>> {
        serde_json::from_str(self.events.as_deref()?).ok()
    }
}

/// What a replica's listening connection hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Committed(Committed),
    /// A call for `replica` to run.
    Call {
        replica: String,
        id: String,
    },
    /// The answer to a call `caller` made.
    Answer {
        caller: String,
        id: String,
    },
}

impl Notification {
    fn parse(channel: &str, payload: &str) -> Option<Notification> {
        if channel == EVENTS_CHANNEL {
            return Committed::parse(payload).map(Notification::Committed);
        }
        let (kind, rest) = payload.split_once('|')?;
        let (replica, id) = rest.split_once('|')?;
        let (replica, id) = (replica.to_owned(), id.to_owned());
        match kind {
            "call" => Some(Notification::Call { replica, id }),
            "answer" => Some(Notification::Answer {
                caller: replica,
                id,
            }),
            _ => None,
        }
    }
}

/// A dedicated connection that LISTENs on both channels.
pub struct Listener(PgListener);

impl Listener {
    /// The next notification; `Ok(None)` when the connection was lost (and has been made
    /// again): what was sent meanwhile is gone, so the caller resynchronizes.
    pub async fn next(&mut self) -> Result<Option<Notification>, Error> {
        loop {
            match self.0.try_recv().await.map_err(super::group::sqlx_error)? {
                None => return Ok(None),
                Some(notification) => {
                    let parsed =
                        Notification::parse(notification.channel(), notification.payload());
                    if parsed.is_some() {
                        return Ok(parsed);
                    }
                    tracing::warn!(
                        channel = notification.channel(),
                        payload = notification.payload(),
                        "unreadable notification ignored"
                    );
                }
            }
        }
    }
}

/// The run's compare-and-set as a replica's: it holds only while the run is leased to this
/// replica or to none, so a replica that lost a run's lease can no longer write it. A terminal
/// status ends the lease (an ended run has no runtime subscription to own).
pub(super) fn fenced(
    update: UpdateMany<run::Entity>,
    replica: &str,
    status: Option<RunStatus>,
) -> UpdateMany<run::Entity> {
    let update = update.filter(
        Condition::any()
            .add(run::Column::OwnerReplica.eq(replica))
            .add(run::Column::OwnerReplica.is_null()),
    );
    match status {
        Some(status) if status.is_terminal() => update.col_expr(
            run::Column::OwnerReplica,
            Expr::value(Option::<String>::None),
        ),
        _ => update,
    }
}

/// Announces commits to the other replicas, once they have committed, from a connection of
/// its own. Not in the commit's transaction: PostgreSQL holds one database-wide lock from the
/// commit of a transaction that notified until that commit is flushed, so every notifying
/// commit waited for the one before it to reach the disk (pgbench here, 8 clients inserting:
/// 2,274 commits/s, 1,207 with a `pg_notify` in each transaction). A transaction that only
/// notifies writes nothing and is not flushed. What waits in the queue goes in one statement.
/// Announcements lost to a crash between the commit and the announcement are made good by the
/// other replicas' resynchronization when the crashed one's lease ends (`runs/cluster`).
#[derive(Clone, Debug)]
pub(super) struct Announcer {
    queue: mpsc::UnboundedSender<String>,
}

/// Announcements per statement at most (each under `CARRIED_PAYLOAD` bytes).
const ANNOUNCE_BATCH: usize = 256;

impl Announcer {
    pub(super) fn spawn(db: sea_orm::DatabaseConnection) -> Announcer {
        let (queue, announcements) = mpsc::unbounded_channel();
        tokio::spawn(announce(db, announcements));
        Announcer { queue }
    }

    /// Announces a commit of `events` (of one run, in seq order) by `replica`.
    pub(super) fn committed(&self, replica: &str, run_id: &str, events: &[CanonicalEvent]) {
        if let Some(payload) = Committed::payload(replica, run_id, events) {
            // The task ends only when every handle is gone.
            let _ = self.queue.send(payload);
        }
    }
}

async fn announce(
    db: sea_orm::DatabaseConnection,
    mut announcements: mpsc::UnboundedReceiver<String>,
) {
    let mut batch = Vec::with_capacity(ANNOUNCE_BATCH);
    let mut connection: Option<sea_orm::sqlx::PgConnection> = None;
    while announcements.recv_many(&mut batch, ANNOUNCE_BATCH).await > 0 {
        // A broken connection is replaced and the batch sent once more on the new one.
        for _attempt in 0..2 {
            let mut held = match connection.take() {
                Some(held) => held,
                None => match db.get_postgres_connection_pool().acquire().await {
                    Ok(pooled) => pooled.detach(),
                    Err(error) => {
                        tracing::warn!(%error, "no connection to announce commits on");
                        continue;
                    }
                },
            };
            let sent = sea_orm::sqlx::query(
                "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
            )
            .bind(EVENTS_CHANNEL)
            .bind(&batch)
            .execute(&mut held)
            .await;
            match sent {
                Ok(_) => {
                    connection = Some(held);
                    break;
                }
                Err(error) => tracing::warn!(%error, "announcing commits failed"),
            }
        }
        batch.clear();
    }
}

fn notify(channel: &str, payload: String) -> Statement {
    Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_notify($1, $2)",
        [DbValue::from(channel), DbValue::from(payload)],
    )
}

/// Active statuses, as SQL literals (they are our own constants).
fn active_statuses() -> String {
    super::statuses(false)
        .into_iter()
        .map(|status| format!("'{status}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runs no live replica owns: unowned, or owned by a replica whose lease expired.
fn orphaned(alias: &str) -> String {
    format!(
        "{alias}.status IN ({active}) AND ({alias}.owner_replica IS NULL OR NOT EXISTS \
         (SELECT 1 FROM replicas p WHERE p.id = {alias}.owner_replica AND p.expires_at > now()))",
        active = active_statuses()
    )
}

/// A run's owner as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub replica: Option<String>,
    /// Whether that replica's lease is current.
    pub live: bool,
}

/// A replica whose lease is current.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveReplica {
    pub id: String,
    pub runs: i64,
}

impl Store {
    fn postgres(&self, sql: &str, values: Vec<DbValue>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }

    fn me(&self) -> Result<&str, Error> {
        self.replica()
            .ok_or_else(|| Error::Corrupt("the store is not a replica's".to_owned()))
    }

    /// Renews this replica's lease (made on the first call); returns the other replicas whose
    /// lease is current.
    pub async fn heartbeat(&self, ttl: Duration) -> Result<BTreeSet<String>, Error> {
        let me = self.me()?;
        let rows = self
            .db
            .query_all_raw(self.postgres(
                "WITH beat AS (INSERT INTO replicas (id, started_at, heartbeat_at, expires_at) \
                 VALUES ($1, now(), now(), now() + $2 * interval '1 millisecond') \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), \
                 expires_at = EXCLUDED.expires_at) \
                 SELECT id FROM replicas WHERE expires_at > now() AND id <> $1",
                vec![me.into(), (ttl.as_millis() as i64).into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get("", "id").ok())
            .collect())
    }

    /// Takes over this replica's share of the runs no live replica owns: enough to bring it
    /// to an equal part of all active runs (rounded up), so that survivors split a dead
    /// replica's runs evenly. Rows another replica is claiming at the same moment are skipped.
    pub async fn claim_orphaned_runs(&self) -> Result<Vec<Run>, Error> {
        let me = self.me()?;
        let active = active_statuses();
        let counts = self
            .db
            .query_one_raw(self.postgres(
                &format!(
                    "SELECT (SELECT count(*) FROM replicas WHERE expires_at > now()) AS live, \
                     (SELECT count(*) FROM runs WHERE status IN ({active})) AS active, \
                     (SELECT count(*) FROM runs WHERE status IN ({active}) \
                      AND owner_replica = $1) AS mine, \
                     (SELECT count(*) FROM runs r WHERE {orphaned}) AS orphaned",
                    orphaned = orphaned("r")
                ),
                vec![me.into()],
            ))
            .await?
            .ok_or_else(|| Error::Corrupt("no counts".to_owned()))?;
        let count = |column: &str| counts.try_get::<i64>("", column).unwrap_or(0);
        let (live, active_runs, mine, orphans) = (
            count("live").max(1),
            count("active"),
            count("mine"),
            count("orphaned"),
        );
        let share = (active_runs + live - 1) / live - mine;
        let take = share.min(orphans);
        if take <= 0 {
            return Ok(Vec::new());
        }
        let claimed = self
            .db
            .query_all_raw(self.postgres(
                &format!(
                    "UPDATE runs SET owner_replica = $1 WHERE id IN \
                     (SELECT r.id FROM runs r WHERE {orphaned} ORDER BY r.created_at \
                      LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
                    orphaned = orphaned("r")
                ),
                vec![me.into(), take.into()],
            ))
            .await?;
        let ids: Vec<String> = claimed
            .iter()
            .filter_map(|row| row.try_get::<String>("", "id").ok())
            .collect();
        self.runs_by_id(ids).await
    }

    /// Claims one run if no live replica owns it; the run when it was claimed.
    pub async fn claim_run(&self, run_id: &str) -> Result<Option<Run>, Error> {
        let me = self.me()?;
        let claimed = self
            .db
            .query_all_raw(self.postgres(
                &format!(
                    "UPDATE runs SET owner_replica = $1 WHERE id = \
                     (SELECT r.id FROM runs r WHERE r.id = $2 AND {orphaned} \
                      FOR UPDATE SKIP LOCKED) RETURNING id",
                    orphaned = orphaned("r")
                ),
                vec![me.into(), run_id.into()],
            ))
            .await?;
        let ids = claimed
            .iter()
            .filter_map(|row| row.try_get::<String>("", "id").ok())
            .collect();
        Ok(self.runs_by_id(ids).await?.pop())
    }

    async fn runs_by_id(&self, ids: Vec<String>) -> Result<Vec<Run>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        run::Entity::find()
            .filter(run::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(run_from_row)
            .collect()
    }

    /// The active runs leased to this replica.
    pub async fn owned_runs(&self) -> Result<Vec<Run>, Error> {
        let me = self.me()?;
        run::Entity::find()
            .filter(run::Column::OwnerReplica.eq(me))
            .filter(run::Column::Status.is_in(super::statuses(false)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(run_from_row)
            .collect()
    }

    /// The ids of the active runs leased to this replica (`/readyz`, which load balancers and
    /// load generators call often: the rows themselves are not read).
    pub async fn owned_run_ids(&self) -> Result<Vec<String>, Error> {
        let me = self.me()?;
        Ok(run::Entity::find()
            .select_only()
            .column(run::Column::Id)
            .filter(run::Column::OwnerReplica.eq(me))
            .filter(run::Column::Status.is_in(super::statuses(false)))
            .order_by_asc(run::Column::Id)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    /// Who owns a run; `None` when there is no such run.
    pub async fn run_owner(&self, run_id: &str) -> Result<Option<Owner>, Error> {
        let row = self
            .db
            .query_one_raw(self.postgres(
                "SELECT r.owner_replica, COALESCE(p.expires_at > now(), false) AS live \
                 FROM runs r LEFT JOIN replicas p ON p.id = r.owner_replica WHERE r.id = $1",
                vec![run_id.into()],
            ))
            .await?;
        Ok(row.map(|row| Owner {
            replica: row.try_get("", "owner_replica").ok().flatten(),
            live: row.try_get("", "live").unwrap_or(false),
        }))
    }

    /// The replicas whose lease is current, with the active runs each owns.
    pub async fn live_replicas(&self) -> Result<Vec<LiveReplica>, Error> {
        let rows = self
            .db
            .query_all_raw(self.postgres(
                &format!(
                    "SELECT p.id, (SELECT count(*) FROM runs r WHERE r.owner_replica = p.id \
                     AND r.status IN ({active})) AS runs FROM replicas p \
                     WHERE p.expires_at > now() ORDER BY p.id",
                    active = active_statuses()
                ),
                Vec::new(),
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                Some(LiveReplica {
                    id: row.try_get("", "id").ok()?,
                    runs: row.try_get("", "runs").ok()?,
                })
            })
            .collect())
    }

    /// Gives this replica's runs up and ends its lease (a graceful stop): the others take
    /// them over at their next heartbeat instead of after the lease's TTL.
    pub async fn release_replica(&self) -> Result<u64, Error> {
        let me = self.me()?;
        let txn = self.db.begin().await?;
        let released = txn
            .execute_raw(self.postgres(
                "UPDATE runs SET owner_replica = NULL WHERE owner_replica = $1",
                vec![me.into()],
            ))
            .await?
            .rows_affected();
        txn.execute_raw(self.postgres("DELETE FROM replicas WHERE id = $1", vec![me.into()]))
            .await?;
        txn.commit().await?;
        Ok(released)
    }

    /// Opens a dedicated connection listening for commits and calls.
    pub async fn listen(&self) -> Result<Listener, Error> {
        let mut listener = PgListener::connect_with(self.db.get_postgres_connection_pool())
            .await
            .map_err(super::group::sqlx_error)?;
        listener
            .listen_all([EVENTS_CHANNEL, CALLS_CHANNEL])
            .await
            .map_err(super::group::sqlx_error)?;
        Ok(Listener(listener))
    }

    /// Asks `replica` to run `call` for `run_id`, announced in the same transaction.
    pub async fn send_call(
        &self,
        id: &str,
        replica: &str,
        run_id: &str,
        call: Value,
    ) -> Result<(), Error> {
        let me = self.me()?;
        let txn = self.db.begin().await?;
        txn.execute_raw(self.postgres(
            "INSERT INTO replica_calls (id, replica, caller, run_id, call, created_at) \
             VALUES ($1, $2, $3, $4, $5, now())",
            vec![
                id.into(),
                replica.into(),
                me.into(),
                run_id.into(),
                call.into(),
            ],
        ))
        .await?;
        txn.execute_raw(notify(CALLS_CHANNEL, format!("call|{replica}|{id}")))
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Takes a call addressed to this replica, once: its run and what to do; `None` when it
    /// is taken already or gone.
    pub async fn take_call(&self, id: &str) -> Result<Option<(String, Value)>, Error> {
        let me = self.me()?;
        let row = self
            .db
            .query_one_raw(self.postgres(
                "UPDATE replica_calls SET taken_at = now() \
                 WHERE id = $1 AND replica = $2 AND taken_at IS NULL RETURNING run_id, call",
                vec![id.into(), me.into()],
            ))
            .await?;
        Ok(row.and_then(|row| {
            Some((
                row.try_get("", "run_id").ok()?,
                row.try_get("", "call").ok()?,
            ))
        }))
    }

    /// Calls addressed to this replica that nobody took (announced while it was not listening).
    pub async fn untaken_calls(&self) -> Result<Vec<String>, Error> {
        let me = self.me()?;
        let rows = self
            .db
            .query_all_raw(self.postgres(
                "SELECT id FROM replica_calls WHERE replica = $1 AND taken_at IS NULL",
                vec![me.into()],
            ))
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| row.try_get("", "id").ok())
            .collect())
    }

    /// Records a call's answer and tells its caller, in one transaction.
    pub async fn answer_call(&self, id: &str, answer: Value) -> Result<(), Error> {
        let txn = self.db.begin().await?;
        let caller = txn
            .query_one_raw(self.postgres(
                "UPDATE replica_calls SET answer = $2, answered_at = now() WHERE id = $1 \
                 RETURNING caller",
                vec![id.into(), answer.into()],
            ))
            .await?
            .and_then(|row| row.try_get::<String>("", "caller").ok());
        if let Some(caller) = caller {
            txn.execute_raw(notify(CALLS_CHANNEL, format!("answer|{caller}|{id}")))
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A call's answer, once there is one; the row goes with it.
    pub async fn call_answer(&self, id: &str) -> Result<Option<Value>, Error> {
        let row = self
            .db
            .query_one_raw(self.postgres(
                "DELETE FROM replica_calls WHERE id = $1 AND answer IS NOT NULL RETURNING answer",
                vec![id.into()],
            ))
            .await?;
        Ok(row.and_then(|row| row.try_get::<Value>("", "answer").ok()))
    }

    /// Withdraws a call nobody took (its replica died); `false` when it was taken meanwhile.
    pub async fn withdraw_call(&self, id: &str) -> Result<bool, Error> {
        let done = self
            .db
            .execute_raw(self.postgres(
                "DELETE FROM replica_calls WHERE id = $1 AND taken_at IS NULL",
                vec![id.into()],
            ))
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The advisory lock that one process at a time migrates under.
const MIGRATION_LOCK: i64 = 0x6d61_6370_6d69_6772; // "macpmigr"

/// The migration lock, held on a connection of its own until dropped (the connection's end
/// releases it).
pub(super) struct MigrationLock {
    _held: sea_orm::sqlx::PgConnection,
}

impl MigrationLock {
    pub(super) async fn take(db: &sea_orm::DatabaseConnection) -> Result<MigrationLock, Error> {
        let mut connection = db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(super::group::sqlx_error)?
            .detach();
        sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut connection)
            .await
            .map_err(super::group::sqlx_error)?;
        Ok(MigrationLock { _held: connection })
    }
}

/// The advisory lock of the work done once per cluster (webhook delivery, data retention).
const LEADER_LOCK: i64 = 0x6d61_6370_6c65_6164; // "macplead"

/// A connection holding the cluster's leader lock: the lock goes with the connection, so a
/// leader that dies (or loses the database) lets another take over.
pub struct Leadership(sea_orm::sqlx::PgConnection);

impl Leadership {
    /// Whether the connection, and so the lock, is still there.
    pub async fn check(&mut self) -> Result<(), Error> {
        sea_orm::sqlx::query("SELECT 1")
            .execute(&mut self.0)
            .await
            .map_err(super::group::sqlx_error)?;
        Ok(())
    }
}

impl Store {
    /// The leader lock on a connection of its own, or `None` when another replica holds it.
    pub async fn try_lead(&self) -> Result<Option<Leadership>, Error> {
        let mut connection = self
            .db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(super::group::sqlx_error)?
            .detach();
        let locked: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut connection)
            .await
            .map_err(super::group::sqlx_error)?;
        Ok(locked.then_some(Leadership(connection)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_read_back_what_was_sent() {
        let event = |seq: i64, text: &str| {
            let mut event: CanonicalEvent = serde_json::from_value(serde_json::json!({
                "id": format!("e{seq}"), "runId": "7b0c", "seq": seq,
                "ts": "2026-12-07T10:00:00.000Z", "type": "message.received",
                "schemaVersion": 1, "source": {"kind": "runtime", "name": "r"},
                "data": {"text": ""}
            }))
            .expect("an event");
            event.data["text"] = serde_json::json!(text);
            event
        };
        // Small commits carry their events (a `|` in them included); large ones only their
        // seqs, within PostgreSQL's payload limit.
        let committed = |payload: &str| match Notification::parse(EVENTS_CHANNEL, payload) {
            Some(Notification::Committed(committed)) => committed,
            other => panic!("{payload}: {other:?}"),
        };
        let small = vec![event(4, "a|b"), event(5, "c")];
        let payload = Committed::payload("replica-a", "7b0c", &small).expect("payload");
        let read = committed(&payload);
        assert_eq!(
            (read.replica.as_str(), read.run_id.as_str()),
            ("replica-a", "7b0c")
        );
        assert_eq!((read.first_seq, read.last_seq), (4, 5));
        assert_eq!(read.events(), Some(small));
        let large = vec![event(6, &"x".repeat(CARRIED_PAYLOAD)), event(7, "y")];
        let payload = Committed::payload("replica-a", "7b0c", &large).expect("payload");
        assert!(payload.len() < 8_000);
        let read = committed(&payload);
        assert_eq!((read.first_seq, read.last_seq), (6, 7));
        assert_eq!(read.events(), None);
        // Events that do not decode are as good as none: the store is read.
        assert_eq!(committed("a|b|1|2|[{}]").events(), None);
        assert_eq!(Committed::payload("replica-a", "7b0c", &[]), None);
        assert_eq!(
            Notification::parse(CALLS_CHANNEL, "answer|replica-b|c1"),
            Some(Notification::Answer {
                caller: "replica-b".to_owned(),
                id: "c1".to_owned()
            })
        );
        for garbage in ["", "a|b", "a|b|x|9"] {
            assert_eq!(Notification::parse(EVENTS_CHANNEL, garbage), None);
        }
        assert_eq!(Notification::parse(CALLS_CHANNEL, "ring|a|b"), None);
    }
}
