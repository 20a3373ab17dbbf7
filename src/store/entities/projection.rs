use sea_orm::entity::prelude::*;

/// The whole projection of a run as one JSON document; `version` is the seq of the last event
/// folded into it.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_projections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    pub version: i64,
    pub schema_version: i32,
    #[sea_orm(column_type = "JsonBinary")]
    pub state: Json,
    pub updated_at: ChronoDateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
