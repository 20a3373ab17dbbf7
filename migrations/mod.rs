//! Schema migrations, one module each, applied in order on SQLite and PostgreSQL alike
//! (`macp-control-plane migrate`, and on every `serve` start).

use sea_orm_migration::prelude::*;

mod m0001_runs;
mod m0002_checkpoints;
mod m0003_artifacts;
mod m0004_projection_storage;
mod m0005_auth;
mod m0006_run_management;
mod m0007_webhooks;
mod m0008_dashboard;
mod m0009_dashboard_rollups;
mod m0010_replicas;
pub(super) mod m0011_rollup_deltas;
mod m0012_write_guard;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_runs::Migration),
            Box::new(m0002_checkpoints::Migration),
            Box::new(m0003_artifacts::Migration),
            Box::new(m0004_projection_storage::Migration),
            Box::new(m0005_auth::Migration),
            Box::new(m0006_run_management::Migration),
            Box::new(m0007_webhooks::Migration),
            Box::new(m0008_dashboard::Migration),
            Box::new(m0009_dashboard_rollups::Migration),
            Box::new(m0010_replicas::Migration),
            Box::new(m0011_rollup_deltas::Migration),
            Box::new(m0012_write_guard::Migration),
        ]
    }
}
