use sea_orm::entity::prelude::*;

/// The projection of a run as it was after event `seq`.
#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_projection_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub run_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    #[sea_orm(column_type = "JsonBinary")]
    pub state: Json,
}

impl ActiveModelBehavior for ActiveModel {}
