use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub actor: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub roles: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub participants: Json,
    #[sea_orm(unique)]
    pub digest: String,
    pub prefix: String,
    pub created_by: Option<String>,
    pub created_at: ChronoDateTimeUtc,
    pub revoked_at: Option<ChronoDateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
