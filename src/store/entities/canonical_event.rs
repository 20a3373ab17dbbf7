use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_events_canonical")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub id: String,
    pub ts: ChronoDateTimeUtc,
    pub event_type: String,
    pub subject_kind: Option<String>,
    pub subject_id: Option<String>,
    pub source_kind: String,
    pub source_name: String,
    pub raw_type: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub parent_span_id: Option<String>,
    pub schema_version: i32,
    #[sea_orm(column_type = "JsonBinary")]
    pub data: Json,
}

impl ActiveModelBehavior for ActiveModel {}
