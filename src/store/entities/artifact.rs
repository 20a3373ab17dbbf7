use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "run_artifacts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub run_id: String,
    pub kind: String,
    pub label: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub uri: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub inline: Option<Json>,
    pub created_at: ChronoDateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
