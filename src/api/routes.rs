//! One REST route per RPC. This table is the single list of the mapping; a test checks that
//! every RPC of our proto services is here and that every route here answers.

/// (RPC name, HTTP method, path). RPC names are unique across our services.
pub const RPC_ROUTES: &[(&str, &str, &str)] = &[
    // ControlPlane
    ("RunStart", "POST", "/runs"),
    ("ValidateRun", "POST", "/runs/validate"),
    ("GetRun", "GET", "/runs/{id}"),
    ("ListRuns", "GET", "/runs"),
    ("GetRunState", "GET", "/runs/{id}/state"),
    ("ListRunEvents", "GET", "/runs/{id}/events"),
    ("CancelRun", "POST", "/runs/{id}/cancel"),
    ("SuspendSession", "POST", "/runs/{id}/suspend"),
    ("ResumeSession", "POST", "/runs/{id}/resume"),
    ("AwaitRun", "GET", "/runs/{id}/await"),
    ("WhatIfRun", "POST", "/runs/{id}/what-if"),
    ("GetRunReceipt", "GET", "/runs/{id}/receipt"),
    ("WatchRun", "GET", "/runs/{id}/stream"),
    ("CreateReplay", "POST", "/runs/{id}/replay"),
    ("Replay", "GET", "/runs/{id}/replay/stream"),
    ("GetReplayState", "GET", "/runs/{id}/replay/state"),
    ("ListEvents", "GET", "/events"),
    ("SendRunMessage", "POST", "/runs/{id}/messages"),
    ("SendRunSignal", "POST", "/runs/{id}/signal"),
    ("UpdateRunContext", "POST", "/runs/{id}/context"),
    ("ListRunMessages", "GET", "/runs/{id}/messages"),
    ("Traces", "GET", "/runs/{id}/traces"),
    ("ListRunArtifacts", "GET", "/runs/{id}/artifacts"),
    ("CreateRunArtifact", "POST", "/runs/{id}/artifacts"),
    ("GetRunMetrics", "GET", "/runs/{id}/metrics"),
    ("GetRuntimeManifest", "GET", "/runtime/manifest"),
    ("ListRuntimeModes", "GET", "/runtime/modes"),
    ("ListRuntimeRoots", "GET", "/runtime/roots"),
    ("GetRuntimeHealth", "GET", "/runtime/health"),
    ("GetRuntimeReceiptKeys", "GET", "/runtime/receipt-keys"),
    ("ListPolicies", "GET", "/runtime/policies"),
    ("GetPolicy", "GET", "/runtime/policies/{policyId}"),
    ("RegisterPolicy", "POST", "/runtime/policies"),
    ("UnregisterPolicy", "DELETE", "/runtime/policies/{policyId}"),
    ("ListAudit", "GET", "/audit"),
    ("CreateApiKey", "POST", "/keys"),
    ("ListApiKeys", "GET", "/keys"),
    ("RevokeApiKey", "DELETE", "/keys/{keyId}"),
    ("CreateWebhook", "POST", "/webhooks"),
    ("ListWebhooks", "GET", "/webhooks"),
    ("UpdateWebhook", "PATCH", "/webhooks/{webhookId}"),
    (
        "ListWebhookDeliveries",
        "GET",
        "/webhooks/{webhookId}/deliveries",
    ),
    ("DeleteWebhook", "DELETE", "/webhooks/{webhookId}"),
    (
        "ResetCircuitBreaker",
        "POST",
        "/admin/circuit-breaker/reset",
    ),
    (
        "GetCircuitBreakerHistory",
        "GET",
        "/admin/circuit-breaker/history",
    ),
    ("ArchiveRun", "POST", "/runs/{id}/archive"),
    ("UnarchiveRun", "POST", "/runs/{id}/unarchive"),
    ("DeleteRun", "DELETE", "/runs/{id}"),
    ("CloneRun", "POST", "/runs/{id}/clone"),
    ("CompareRuns", "POST", "/runs/compare"),
    ("ExportRun", "GET", "/runs/{id}/export"),
    ("StreamRunExport", "GET", "/runs/{id}/export/stream"),
    ("BatchRuns", "POST", "/runs/batch/{action}"),
    ("RebuildProjection", "POST", "/runs/{id}/projection/rebuild"),
    ("GetDashboardOverview", "GET", "/dashboard/overview"),
    ("ListAgentMetrics", "GET", "/dashboard/agents/metrics"),
    // ScenarioRegistry
    ("ListPacks", "GET", "/packs"),
    ("ListScenarios", "GET", "/packs/{pack}/scenarios"),
    ("ListAllScenarios", "GET", "/scenarios"),
    (
        "GetLaunchSchema",
        "GET",
        "/packs/{pack}/scenarios/{scenario}/versions/{version}/launch-schema",
    ),
    ("CompileLaunch", "POST", "/launch/compile"),
    ("Launch", "POST", "/launch"),
    ("ListAgents", "GET", "/agents"),
    ("GetAgent", "GET", "/agents/{ref}"),
];

/// Second routes for an RPC, under the names the MACP UI console calls.
pub const ALIAS_ROUTES: &[(&str, &str, &str)] = &[("Launch", "POST", "/examples/run")];

/// Operational routes that have no RPC.
pub const OPS_ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
];

use crate::auth::Permission::{self, Admin, Docs, Metrics, Operate, Public, Read, ReadRun, Send};
use crate::auth::audit::{Action, POLICY_REGISTER, action};

/// What each RPC (and so its REST route) requires, and the audit action it is recorded as
/// (mutating calls only). Exactly one entry per RPC: a test fails for an RPC without one.
pub const RPC_PERMISSIONS: &[(&str, Permission, Option<Action>)] = &[
    ("RunStart", Operate, action("run.start", "run")),
    ("ValidateRun", Operate, None),
    ("GetRun", ReadRun, None),
    ("ListRuns", Read, None),
    ("GetRunState", ReadRun, None),
    ("ListRunEvents", ReadRun, None),
    ("CancelRun", Operate, action("run.cancel", "run")),
    ("SuspendSession", Operate, action("run.suspend", "run")),
    ("ResumeSession", Operate, action("run.resume", "run")),
    ("AwaitRun", ReadRun, None),
    // Read-only on the runtime: the candidate is never registered.
    ("WhatIfRun", ReadRun, None),
    ("GetRunReceipt", ReadRun, None),
    ("WatchRun", ReadRun, None),
    ("CreateReplay", ReadRun, None),
    ("Replay", ReadRun, None),
    ("GetReplayState", ReadRun, None),
    ("ListEvents", Read, None),
    ("SendRunMessage", Send, action("run.message", "run")),
    ("SendRunSignal", Send, action("run.signal", "run")),
    ("UpdateRunContext", Send, action("run.context", "run")),
    ("ListRunMessages", ReadRun, None),
    ("Traces", ReadRun, None),
    ("ListRunArtifacts", ReadRun, None),
    ("CreateRunArtifact", Operate, action("run.artifact", "run")),
    ("GetRunMetrics", ReadRun, None),
    ("GetRuntimeManifest", Read, None),
    ("ListRuntimeModes", Read, None),
    ("ListRuntimeRoots", Read, None),
    ("GetRuntimeHealth", Read, None),
    ("GetRuntimeReceiptKeys", Read, None),
    ("ListPolicies", Read, None),
    ("GetPolicy", Read, None),
    // Policies govern every session of the runtime.
    ("RegisterPolicy", Admin, Some(POLICY_REGISTER)),
    (
        "UnregisterPolicy",
        Admin,
        action("policy.unregister", "policy"),
    ),
    ("ListAudit", Admin, None),
    ("CreateApiKey", Admin, action("key.create", "key")),
    ("ListApiKeys", Admin, None),
    ("RevokeApiKey", Admin, action("key.revoke", "key")),
    // Webhooks send run data out of the service, to any address the guard allows.
    ("CreateWebhook", Admin, action("webhook.create", "webhook")),
    ("ListWebhooks", Admin, None),
    ("UpdateWebhook", Admin, action("webhook.update", "webhook")),
    ("DeleteWebhook", Admin, action("webhook.delete", "webhook")),
    ("ListWebhookDeliveries", Admin, None),
    (
        "ResetCircuitBreaker",
        Admin,
        action("circuit-breaker.reset", "circuit-breaker"),
    ),
    ("GetCircuitBreakerHistory", Admin, None),
    ("ArchiveRun", Operate, action("run.archive", "run")),
    ("UnarchiveRun", Operate, action("run.unarchive", "run")),
    ("DeleteRun", Operate, action("run.delete", "run")),
    ("CloneRun", Operate, action("run.clone", "run")),
    ("CompareRuns", Read, None),
    ("ExportRun", ReadRun, None),
    ("StreamRunExport", ReadRun, None),
    ("BatchRuns", Operate, action("run.batch", "run")),
    (
        "RebuildProjection",
        Operate,
        action("run.projection.rebuild", "run"),
    ),
    ("GetDashboardOverview", Read, None),
    ("ListAgentMetrics", Read, None),
    ("ListPacks", Read, None),
    ("ListScenarios", Read, None),
    ("ListAllScenarios", Read, None),
    ("GetLaunchSchema", Read, None),
    ("CompileLaunch", Operate, None),
    ("Launch", Operate, action("run.launch", "run")),
    ("ListAgents", Read, None),
    ("GetAgent", Read, None),
];

/// What each operational route requires.
pub const OPS_PERMISSIONS: &[(&str, Permission)] = &[
    ("/healthz", Public),
    ("/readyz", Public),
    ("/metrics", Metrics),
    ("/openapi.json", Docs),
    ("/docs", Docs),
];

/// gRPC server reflection (grpcurl, Postman) lists and describes the API: a reader's.
pub const REFLECTION_PERMISSION: Permission = Read;
