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
