use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub status: String,
    pub mode: String,
    pub runtime_kind: String,
    pub runtime_version: Option<String>,
    #[sea_orm(unique)]
    pub runtime_session_id: Option<String>,
    pub trace_id: Option<String>,
    #[sea_orm(unique)]
    pub idempotency_key: Option<String>,
    pub last_event_seq: i64,
    pub source_kind: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub source_ref: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub tags: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
    pub error_code: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub started_at: Option<ChronoDateTimeUtc>,
    pub ended_at: Option<ChronoDateTimeUtc>,
    pub updated_at: ChronoDateTimeUtc,
    /// The authenticated actor who started the run (none when auth is off or it was discovered).
    pub created_by: Option<String>,
    /// When the run was archived (hidden from run lists unless they ask for archived runs).
    pub archived_at: Option<ChronoDateTimeUtc>,
    /// The replica whose lease covers the run while it is active (`CLUSTER_ENABLED`); none on
    /// a single process, and once the run has ended.
    pub owner_replica: Option<String>,
}

impl ActiveModelBehavior for ActiveModel {}
