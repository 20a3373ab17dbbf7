//! A process that dies mid-kickoff: the rest of the kickoff is sent after the restart (found
//! by `faults::crash`; the run had stayed `running` until its session expired).

use macp_control_plane::app::RuntimeTarget;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::Value;

use super::summary::Tally;
use crate::requests;
use crate::runtime_process::spawn_runtime;
use crate::support::{self, Backend};

async fn a_kickoff_cut_short_by_a_crash_is_finished_after_the_restart(backend: Backend) {
    let mut tally = Tally::begin(&format!("kickoff {backend:?}"));
    let runtime = spawn_runtime(&[("MACP_MEMORY_ONLY", "1")]).await;
    let Some(app) = support::start_with(
        backend,
        support::Options {
            runtime: RuntimeTarget::External {
                address: runtime.address.clone(),
                tls: false,
            },
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    // The process "dies" after three of the five kickoff messages: the run is started with
    // those three, and the stored request then gets the other two back, as it was.
    let full = requests::scripted_task();
    let mut cut = full.clone();
    cut["kickoff"] = Value::Array(full["kickoff"].as_array().expect("kickoff")[..3].to_vec());
    let run_id = app.start_run(&cut).await;
    app.wait_for(&run_id, |state| {
        state.run.status == "running"
            && state
                .timeline
                .recent
                .iter()
                .filter(|entry| entry.event_type == "message.sent")
                .count()
                == 4
    })
    .await;
    let store = app.store().await;
    let mut metadata = store
        .run(&run_id)
        .await
        .expect("run")
        .expect("stored")
        .metadata;
    metadata["executionRequest"]["kickoff"] = full["kickoff"].clone();
    let db = Database::connect(app.app.database_url())
        .await
        .expect("connects");
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        "UPDATE runs SET metadata = $1 WHERE id = $2",
        [metadata.into(), run_id.clone().into()],
    ))
    .await
    .expect("updates");

    let app = app.restart().await;
    tally.injected += 1;
    let state = app.wait_terminal(&run_id).await;
    assert_eq!(state.run.status, "completed", "{state:?}");
    let events = app.events(&run_id).await;
    let kickoff_ids: Vec<String> = events
        .iter()
        .filter(|event| event["type"] == "message.sent")
        .filter_map(|event| event["data"]["messageId"].as_str())
        .filter(|id| id.contains(":kickoff:"))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..5).map(|n| format!("{run_id}:kickoff:{n}")).collect();
    tally.compare(&kickoff_ids, &expected);
    tally.runs += 1;
    assert_eq!(kickoff_ids, expected, "each kickoff message recorded once");
    app.stop().await;
    runtime.kill().await;
}
crate::on_both_backends!(a_kickoff_cut_short_by_a_crash_is_finished_after_the_restart);
