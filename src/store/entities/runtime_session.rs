use sea_orm::entity::prelude::*;

/// The runtime session bound to a run, with the runtime ordinal the observer has persisted up to
/// (`last_ordinal`), which is what a resubscription after a restart resumes from.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "runtime_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    #[sea_orm(unique)]
    pub runtime_session_id: String,
    pub mode_name: String,
    pub mode_version: String,
    pub configuration_version: String,
    pub policy_version: Option<String>,
    pub initiator: String,
    pub session_state: String,
    pub last_ordinal: i64,
    #[sea_orm(column_type = "JsonBinary")]
    pub participants: Json,
    pub created_at: ChronoDateTimeUtc,
    pub updated_at: ChronoDateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
