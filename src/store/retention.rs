//! What data retention deletes: runs that ended before a cutoff.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::run;
use super::{Error, Store};
use crate::time::Timestamp;

impl Store {
    /// Ids of up to `limit` terminal runs that ended before `cutoff`, the oldest first. Only
    /// terminal statuses are read: an active run is never one of them (and the delete checks
    /// the status again in its own transaction).
    pub async fn runs_ended_before(
        &self,
        cutoff: Timestamp,
        limit: u64,
    ) -> Result<Vec<String>, Error> {
        Ok(run::Entity::find()
            .select_only()
            .column(run::Column::Id)
            .filter(run::Column::Status.is_in(super::statuses(true)))
            .filter(run::Column::EndedAt.lt(cutoff))
            .order_by_asc(run::Column::EndedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}
