use sea_orm::entity::prelude::*;

/// A runtime item as received. `seq` is the seq of the first canonical event it produced.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_events_raw")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub ts: ChronoDateTimeUtc,
    pub kind: String,
    pub ordinal: Option<i64>,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
}

impl ActiveModelBehavior for ActiveModel {}
