//! Data retention: runs that ended more than the TTL ago are deleted, in batches, with
//! everything stored for them and an audit row each; recent and active runs stay.

use std::time::Duration;

use macp_control_plane::domain::audit::AuditFilter;
use macp_control_plane::runs::retention::RetentionOptions;
use sea_orm::{ConnectionTrait, Database, Statement};

use crate::requests;
use crate::support::{self, Backend, TestApp};

/// Sets a run's `ended_at` (as if it had ended `days` ago), as another process could.
async fn end_days_ago(app: &TestApp, run_id: &str, days: i64) {
    let db = Database::connect(app.app.database_url())
        .await
        .expect("connects");
    let at = chrono::Utc::now() - chrono::Duration::days(days);
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "UPDATE runs SET ended_at = $1 WHERE id = $2",
            [at.into(), run_id.into()],
        ))
        .await
        .expect("updates");
    assert_eq!(done.rows_affected(), 1);
}

async fn ended_runs_past_the_ttl_are_deleted(backend: Backend) {
    let Some(app) = support::start(backend).await else {
        return;
    };
    let mut expired = Vec::new();
    for _ in 0..3 {
        let run_id = app.start_run(&requests::scripted_decision()).await;
        app.wait_terminal(&run_id).await;
        expired.push(run_id);
    }
    let recent = app.start_run(&requests::scripted_decision()).await;
    app.wait_terminal(&recent).await;
    let active = app.start_run(&requests::seed_example()).await;
    app.wait_for(&active, |state| state.run.status == "running")
        .await;
    for run_id in &expired {
        end_days_ago(&app, run_id, 10).await;
    }
    // A run that has not ended is never deleted, whatever its row says.
    end_days_ago(&app, &active, 10).await;

    // Two runs a batch: the three expired take two batches.
    let app = app
        .restart_with(|config| {
            config.run_options.retention = RetentionOptions {
                enabled: true,
                ttl: Duration::from_secs(7 * 24 * 3600),
                interval: Duration::from_secs(3600),
                batch_size: 2,
            }
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for run_id in &expired {
        // The sweep runs in the background from start; polled, with a deadline.
        while app.get(&format!("/runs/{run_id}")).await.0 != 404 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} was not deleted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (status, run) = app.get(&format!("/runs/{recent}")).await;
    assert_eq!(status, 200, "{run}");
    let (status, run) = app.get(&format!("/runs/{active}")).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "running", "{run}");

    let store = app.store().await;
    for run_id in &expired {
        assert!(store.raw_events(run_id).await.expect("raw").is_empty());
        assert!(
            store
                .events_between(run_id, 0, None, 10)
                .await
                .expect("events")
                .is_empty()
        );
        assert!(store.session(run_id).await.expect("session").is_none());
        assert!(
            store
                .projection(run_id)
                .await
                .expect("projection")
                .is_none()
        );
        let audit = store
            .list_audit(&AuditFilter {
                actor: None,
                action: Some("run.delete".to_owned()),
                resource: None,
                resource_id: Some(run_id.clone()),
                created_after: None,
                created_before: None,
                limit: 10,
                offset: 0,
            })
            .await
            .expect("audit");
        assert_eq!(audit.data.len(), 1, "{audit:?}");
        assert_eq!(audit.data[0].actor, "data-retention");
        assert_eq!(audit.data[0].actor_type, "system");
        assert_eq!(audit.data[0].details["reason"], "retention");
    }
    assert!(!store.raw_events(&recent).await.expect("raw").is_empty());
    app.stop().await;
}
crate::on_both_backends!(ended_runs_past_the_ttl_are_deleted);
