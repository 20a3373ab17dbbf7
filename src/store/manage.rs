//! Run management in the store: archiving, deleting a run with everything stored for it,
//! replacing its projection row, paging raw events, the run-list filters on run metadata, and
//! the figures run records show (read from projection rows, not by folding events).

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, LikeExpr};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, QueryFilter, QueryOrder,
    QuerySelect, Select, TransactionTrait,
};

use super::entities::{
    artifact, canonical_event, checkpoint, projection, raw_event, run, runtime_session,
};
use super::{
    Error, RawRecord, Store, audit_insert, escape_like, insert_checkpoint, upsert_projection,
};
use crate::domain::audit::AuditEntry;
use crate::domain::query::RunFilter;
use crate::domain::status::RunStatus;
use crate::events::canonical::types;
use crate::time::Timestamp;

/// What a delete found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The run and everything stored for it are gone.
    Gone,
    NotFound,
    /// The run has not ended; nothing was deleted.
    NotTerminal(RunStatus),
}

/// Figures of a run read from its projection row and its events, for run records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFigures {
    /// The finalized decision's action and confidence.
    pub final_action: Option<String>,
    pub final_confidence: Option<f64>,
    pub total_tokens: i64,
    pub estimated_cost_usd: f64,
    pub signal_count: i64,
}

/// A key of `runs.metadata` as SQL text (keys are ours, never a caller's).
fn metadata_field(backend: DbBackend, key: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("(\"runs\".\"metadata\" ->> '{key}')"),
        _ => format!("json_extract(\"runs\".\"metadata\", '$.{key}')"),
    }
}

/// A path into the projection document as SQL text (`decision.current.action`).
fn state_field(backend: DbBackend, path: &str) -> String {
    match backend {
        DbBackend::Postgres => format!(
            "(\"run_projections\".\"state\" #>> '{{{}}}')",
            path.replace('.', ",")
        ),
        _ => format!("CAST(json_extract(\"run_projections\".\"state\", '$.{path}') AS TEXT)"),
    }
}

/// `LOWER(sql) LIKE %text%`, case-insensitive on both databases.
fn contains(sql: &str, text: &str) -> Expr {
    let pattern = format!("%{}%", escape_like(&text.to_lowercase()));
    Expr::cust(format!("LOWER(COALESCE({sql}, ''))")).like(LikeExpr::new(pattern).escape('\\'))
}

/// The run-list filters beyond status, creation times and tags.
pub(super) fn list_filters(
    backend: DbBackend,
    mut query: Select<run::Entity>,
    filter: &RunFilter,
) -> Select<run::Entity> {
    if !filter.include_archived {
        query = query.filter(run::Column::ArchivedAt.is_null());
    }
    if !filter.include_sandbox {
        query = query.filter(run::Column::Mode.ne("sandbox"));
    }
    let scenario_ref = metadata_field(backend, "scenarioRef");
    let environment = metadata_field(backend, "environment");
    if let Some(value) = &filter.environment {
        query = query.filter(Expr::cust(environment.clone()).eq(value.clone()));
    }
    if let Some(text) = &filter.scenario_ref {
        query = query
            .filter(contains("\"runs\".\"source_ref\"", text).or(contains(&scenario_ref, text)));
    }
    if let Some(text) = &filter.search {
        query = query.filter(
            contains("CAST(\"runs\".\"id\" AS TEXT)", text)
                .or(contains("\"runs\".\"source_ref\"", text))
                .or(contains(&scenario_ref, text))
                .or(contains(&environment, text))
                .or(contains("CAST(\"runs\".\"tags\" AS TEXT)", text)),
        );
    }
    query
}

impl Store {
    /// Sets or clears the run's `archived_at`, with the call's audit row; `false` when there is
    /// no such run (and nothing is written).
    pub async fn set_archived(
        &self,
        run_id: &str,
        archived_at: Option<Timestamp>,
        audit: Option<AuditEntry>,
    ) -> Result<bool, Error> {
        let backend = self.backend();
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        let updated = run::Entity::update_many()
            .col_expr(run::Column::ArchivedAt, Expr::value(archived_at))
            .col_expr(run::Column::UpdatedAt, Expr::value(crate::time::now()))
            .filter(run::Column::Id.eq(run_id))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        if let Some(entry) = audit {
            txn.execute_raw(audit_insert(backend, entry)).await?;
        }
        txn.commit().await?;
        Ok(true)
    }

    /// Deletes a terminal run and everything stored for it (session, raw and canonical
    /// events, projection, checkpoints, artifacts) with the call's audit row, in one
    /// transaction. A run that has not ended is left as it is.
    pub async fn delete_run(
        &self,
        run_id: &str,
        audit: Option<AuditEntry>,
    ) -> Result<Deleted, Error> {
        let backend = self.backend();
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        let status: Option<String> = run::Entity::find_by_id(run_id.to_owned())
            .select_only()
            .column(run::Column::Status)
            .into_tuple()
            .one(&txn)
            .await?;
        let Some(status) = status else {
            txn.rollback().await?;
            return Ok(Deleted::NotFound);
        };
        let status = RunStatus::parse(&status)
            .ok_or_else(|| Error::Corrupt(format!("run {run_id} has status {status}")))?;
        // A terminal status never changes again, so the check holds for the whole delete.
        if !status.is_terminal() {
            txn.rollback().await?;
            return Ok(Deleted::NotTerminal(status));
        }
        // Children first, explicitly: the foreign keys cascade too, but the delete must not
        // depend on SQLite's foreign-key pragma.
        raw_event::Entity::delete_many()
            .filter(raw_event::Column::RunId.eq(run_id))
            .exec(&txn)
            .await?;
        canonical_event::Entity::delete_many()
            .filter(canonical_event::Column::RunId.eq(run_id))
            .exec(&txn)
            .await?;
        checkpoint::Entity::delete_many()
            .filter(checkpoint::Column::RunId.eq(run_id))
            .exec(&txn)
            .await?;
        projection::Entity::delete_many()
            .filter(projection::Column::RunId.eq(run_id))
            .exec(&txn)
            .await?;
        artifact::Entity::delete_many()
            .filter(artifact::Column::RunId.eq(run_id))
            .exec(&txn)
            .await?;
        runtime_session::Entity::delete_many()
            .filter(runtime_session::Column::RunId.eq(run_id))
            .exec(&txn)
            .await?;
        run::Entity::delete_by_id(run_id.to_owned())
            .exec(&txn)
            .await?;
        if let Some(entry) = audit {
            txn.execute_raw(audit_insert(backend, entry)).await?;
        }
        txn.commit().await?;
        Ok(Deleted::Gone)
    }

    /// Seqs of the run's projection checkpoints, ascending.
    pub async fn checkpoint_seqs(&self, run_id: &str) -> Result<Vec<i64>, Error> {
        Ok(checkpoint::Entity::find()
            .select_only()
            .column(checkpoint::Column::Seq)
            .filter(checkpoint::Column::RunId.eq(run_id))
            .order_by_asc(checkpoint::Column::Seq)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Rewrites the run's projection row as the state after event `seq` and its checkpoints as
    /// `(seq, state)` (a rebuild, done under the run's writer lock), with the call's audit row,
    /// in one transaction.
    pub async fn replace_projection(
        &self,
        run_id: &str,
        seq: i64,
        state_json: String,
        checkpoints: Vec<(i64, String)>,
        audit: Option<AuditEntry>,
    ) -> Result<(), Error> {
        let backend = self.backend();
        let statement = upsert_projection(backend, run_id, seq, state_json)?;
        let inserts = checkpoints
            .into_iter()
            .map(|(seq, json)| insert_checkpoint(backend, run_id, seq, json))
            .collect::<Result<Vec<_>, _>>()?;
        let _writer = self.write_turn().await;
        let txn = self.db.begin().await?;
        if !inserts.is_empty() {
            checkpoint::Entity::delete_many()
                .filter(checkpoint::Column::RunId.eq(run_id))
                .exec(&txn)
                .await?;
            for insert in inserts {
                txn.execute_raw(insert).await?;
            }
        }
        txn.execute_raw(statement).await?;
        if let Some(entry) = audit {
            txn.execute_raw(audit_insert(backend, entry)).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Raw events of a run with `seq > after`, oldest first, at most `limit`.
    pub async fn raw_events_after(
        &self,
        run_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<RawRecord>, Error> {
        let rows = raw_event::Entity::find()
            .filter(raw_event::Column::RunId.eq(run_id))
            .filter(raw_event::Column::Seq.gt(after))
            .order_by_asc(raw_event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| RawRecord {
                seq: row.seq,
                ts: row.ts,
                kind: row.kind,
                ordinal: row.ordinal,
                payload: row.payload,
            })
            .collect())
    }

    /// The figures of each of these runs: a few fields of its projection row, read by the
    /// database (no document crosses the wire), and its signal count.
    pub async fn run_figures(
        &self,
        run_ids: &[String],
    ) -> Result<HashMap<String, RunFigures>, Error> {
        let mut figures: HashMap<String, RunFigures> = HashMap::new();
        if run_ids.is_empty() {
            return Ok(figures);
        }
        let backend = self.backend();
        let field = |path: &str| Expr::cust(state_field(backend, path));
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = projection::Entity::find()
            .select_only()
            .column(projection::Column::RunId)
            .column_as(field("decision.current.finalized"), "finalized")
            .column_as(field("decision.current.action"), "action")
            .column_as(field("decision.current.confidence"), "confidence")
            .column_as(field("llm.totals.totalTokens"), "tokens")
            .column_as(field("llm.totals.estimatedCostUsd"), "cost")
            .filter(projection::Column::RunId.is_in(run_ids.iter().cloned()))
            .into_tuple()
            .all(&self.db)
            .await?;
        for (run_id, finalized, action, confidence, tokens, cost) in rows {
            // SQLite reads JSON `true` as 1.
            let finalized = matches!(finalized.as_deref(), Some("true" | "1"));
            let number = |text: Option<String>| text.and_then(|text| text.parse::<f64>().ok());
            figures.insert(
                run_id,
                RunFigures {
                    final_action: action.filter(|_| finalized),
                    final_confidence: number(confidence).filter(|_| finalized),
                    total_tokens: number(tokens).map_or(0, |tokens| tokens as i64),
                    estimated_cost_usd: number(cost).unwrap_or(0.0),
                    signal_count: 0,
                },
            );
        }
        let signals: Vec<(String, i64)> = canonical_event::Entity::find()
            .select_only()
            .column(canonical_event::Column::RunId)
            .column_as(canonical_event::Column::Seq.count(), "count")
            .filter(canonical_event::Column::RunId.is_in(run_ids.iter().cloned()))
            .filter(canonical_event::Column::EventType.eq(types::SIGNAL_EMITTED))
            .group_by(canonical_event::Column::RunId)
            .into_tuple()
            .all(&self.db)
            .await?;
        for (run_id, count) in signals {
            figures.entry(run_id).or_default().signal_count = count;
        }
        Ok(figures)
    }
}
