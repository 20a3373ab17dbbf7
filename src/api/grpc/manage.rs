//! Run management over gRPC: the same `RunService` calls as the REST routes, with their answers
//! as proto messages.

use futures::StreamExt as _;
use serde_json::json;
use tonic::Status;

use super::{
    BoxStream, artifact_message, event_message, metrics_message, run_and_body, run_message,
    started_message, state_struct, status, to_struct, to_u32,
};
use crate::api::proto;
use crate::runs::RunService;
use crate::runs::manage::{
    BatchOutcome, ExportOptions, ExportQuery, Rebuilt, RunComparison, RunExport, RunSide,
};

pub async fn archive(
    service: &RunService,
    run_id: &str,
    archive: bool,
) -> Result<proto::Run, Status> {
    run_message(
        &service
            .set_archived(run_id, archive)
            .await
            .map_err(status)?,
    )
}

pub async fn delete(
    service: &RunService,
    run_id: &str,
) -> Result<proto::DeleteRunResponse, Status> {
    service.delete(run_id).await.map_err(status)?;
    Ok(proto::DeleteRunResponse {})
}

pub async fn clone_run(
    service: &RunService,
    request: proto::CloneRunRequest,
) -> Result<proto::RunStartResponse, Status> {
    let (run_id, body) = run_and_body(request)?;
    let outcome = service.clone_run(&run_id, &body).await.map_err(status)?;
    Ok(started_message(outcome))
}

fn side_message(side: RunSide) -> proto::RunSide {
    proto::RunSide {
        run_id: side.run_id,
        status: side.status.as_str().to_owned(),
        mode_name: side.mode_name,
        duration_ms: side.duration_ms,
    }
}

pub async fn compare(
    service: &RunService,
    request: proto::CompareRunsRequest,
) -> Result<proto::RunComparison, Status> {
    let body = json!({"leftRunId": request.left_run_id, "rightRunId": request.right_run_id});
    let RunComparison {
        left,
        right,
        status_match,
        duration_delta_ms,
        confidence_delta,
        participants_diff,
        signals_diff,
    } = service.compare(&body).await.map_err(status)?;
    Ok(proto::RunComparison {
        left: Some(side_message(left)),
        right: Some(side_message(right)),
        status_match,
        duration_delta_ms,
        confidence_delta,
        participants_diff: Some(proto::ParticipantsDiff {
            added: participants_diff.added,
            removed: participants_diff.removed,
            common: participants_diff.common,
        }),
        signals_diff: Some(proto::SignalsDiff {
            added: signals_diff.added,
            removed: signals_diff.removed,
        }),
    })
}

fn export_message(export: RunExport) -> Result<proto::RunExport, Status> {
    let header = export.header;
    Ok(proto::RunExport {
        run: Some(run_message(&header.run)?),
        session: header
            .session
            .as_ref()
            .map(to_struct)
            .transpose()?
            .flatten(),
        projection: Some(state_struct(&header.projection)?),
        metrics: Some(metrics_message(header.metrics)),
        artifacts: header
            .artifacts
            .into_iter()
            .map(artifact_message)
            .collect::<Result<_, _>>()?,
        canonical_events: export
            .canonical_events
            .into_iter()
            .map(event_message)
            .collect::<Result<_, _>>()?,
        raw_events: export
            .raw_events
            .iter()
            .map(|raw| to_struct(raw).map(Option::unwrap_or_default))
            .collect::<Result<_, _>>()?,
        exported_at: crate::time::format(&header.exported_at),
    })
}

pub async fn export(
    service: &RunService,
    request: proto::ExportRunRequest,
) -> Result<proto::RunExport, Status> {
    let options = ExportQuery {
        include_canonical: request.include_canonical,
        include_raw: request.include_raw,
        event_limit: request.event_limit.map(i64::from),
        format: request.format,
    }
    .validate()
    .map_err(status)?;
    export_message(
        service
            .export(&request.run_id, options)
            .await
            .map_err(status)?,
    )
}

pub async fn export_records(
    service: &RunService,
    request: proto::StreamRunExportRequest,
) -> Result<BoxStream<pbjson_types::Struct>, Status> {
    let options = ExportOptions {
        include_canonical: request.include_canonical.unwrap_or(true),
        include_raw: request.include_raw.unwrap_or(false),
        event_limit: None,
    };
    let records = service
        .export_records(&request.run_id, options)
        .await
        .map_err(status)?;
    Ok(Box::pin(records.map(|record| {
        let record = record.map_err(status)?;
        Ok(to_struct(&record)?.unwrap_or_default())
    })))
}

pub async fn batch(
    service: &RunService,
    request: proto::BatchRunsRequest,
) -> Result<proto::BatchRunsResponse, Status> {
    let body = json!({"runIds": request.run_ids});
    let BatchOutcome { results } = service
        .batch(&request.action, &body)
        .await
        .map_err(status)?;
    let results = results
        .into_iter()
        .map(|result| {
            Ok(proto::BatchResult {
                run_id: result.run_id,
                ok: result.ok,
                error_code: result.error_code,
                error_message: result.error_message,
                event_limit: result.event_limit.map(|limit| limit as u32),
                truncated: result.truncated,
                export: result
                    .export
                    .map(|export| export_message(*export))
                    .transpose()?,
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(proto::BatchRunsResponse { results })
}

pub async fn rebuild_projection(
    service: &RunService,
    run_id: &str,
) -> Result<proto::RebuildProjectionResponse, Status> {
    let Rebuilt {
        rebuilt,
        latest_seq,
        differed,
    } = service.rebuild_projection(run_id).await.map_err(status)?;
    Ok(proto::RebuildProjectionResponse {
        rebuilt,
        latest_seq: to_u32(latest_seq),
        differed,
    })
}
