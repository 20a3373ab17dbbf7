//! A small packs tree for unit tests.

use std::path::Path;

use super::loader::Snapshot;
use super::scenario_ref::ScenarioRef;

pub(crate) fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub(crate) fn pack_yaml(slug: &str) -> String {
    format!(
        "apiVersion: scenarios.macp.dev/v1\nkind: ScenarioPack\nmetadata: {{slug: {slug}, name: {slug}}}\n"
    )
}

pub(crate) const SCENARIO: &str = r#"apiVersion: scenarios.macp.dev/v1
kind: ScenarioVersion
metadata:
  pack: shop
  scenario: refund
  version: 1.0.0
  name: Refund Review
  tags: [shop, demo]
spec:
  inputs:
    schema:
      type: object
      properties:
        orderId: {type: string, default: ORD-1}
        amount: {type: number, default: 120, minimum: 1}
        express: {type: boolean, default: false}
        region: {type: string, default: eu}
      required: [amount]
  launch:
    modeName: macp.mode.decision.v1
    modeVersion: 1.0.0
    configurationVersion: config.default
    policyVersion: policy.default
    policyHints: {type: none, vetoEnabled: false}
    ttlMs: 60000
    participants: !include ../../../../_shared/participants.yaml
    commitments:
      - id: refund-reviewed
        title: Refund reviewed
        description: "Review of {{ inputs.orderId }}"
        requiredRoles: [reviewer]
    contextTemplate:
      orderId: "{{ inputs.orderId }}"
      amount: "{{ inputs.amount }}"
      express: "{{ inputs.express }}"
      label: "order {{ inputs.orderId }} for {{ inputs.amount }}"
    metadataTemplate:
      demoType: refund
    kickoffTemplate:
      - from: lead
        to: [reviewer]
        kind: proposal
        payload: {proposal_id: "{{ inputs.orderId }}-p"}
      - from: reviewer
        to: [lead]
        kind: request
        messageType: Vote
        payloadEnvelope:
          encoding: proto
          proto:
            typeName: macp.modes.decision.v1.VotePayload
            value: {proposal_id: "{{ inputs.orderId }}-p", vote: APPROVE, reason: ok}
  execution:
    tags: [demo, refunds]
    requester: {actorId: tester, actorType: user}
  outputs:
    expectedDecisionKinds: [approve, deny]
"#;

pub(crate) const PARTICIPANTS: &str = "- {id: reviewer, role: reviewer, agentRef: reviewer-agent}\n- {id: lead, role: lead, agentRef: lead-agent, displayName: Lead}\n";

pub(crate) const STRICT_TEMPLATE: &str = r#"apiVersion: scenarios.macp.dev/v1
kind: ScenarioTemplate
metadata: {scenarioVersion: shop/refund@1.0.0, slug: strict, name: Strict}
spec:
  defaults: {amount: 900, express: true}
  overrides:
    runtime: {version: v2}
    launch:
      ttlMs: 5000
      policyHints: {vetoEnabled: true, threshold: 0.5}
      metadataTemplate: {posture: strict}
      commitments:
        - id: "refund-{{ inputs.amount }}"
          title: Strict refund
    execution:
      tags: [strict]
"#;

pub(crate) fn agent_yaml(agent_ref: &str, role: &str) -> String {
    format!(
        "apiVersion: scenarios.macp.dev/v1\nkind: AgentProfile\nmetadata: {{agentRef: {agent_ref}, name: {agent_ref}, tags: [t]}}\nspec: {{role: {role}, framework: scripted}}\n"
    )
}

/// `shop/refund@1.0.0` with templates `strict` and `plain`, plus the agent catalog.
pub(crate) fn shop_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "_shared/participants.yaml", PARTICIPANTS);
    write(
        root,
        "_agents/reviewer.yaml",
        &agent_yaml("reviewer-agent", "review"),
    );
    write(root, "_agents/lead.yaml", &agent_yaml("lead-agent", "lead"));
    write(root, "shop/pack.yaml", &pack_yaml("shop"));
    write(root, "shop/scenarios/refund/1.0.0/scenario.yaml", SCENARIO);
    write(
        root,
        "shop/scenarios/refund/1.0.0/templates/strict.yaml",
        STRICT_TEMPLATE,
    );
    write(
        root,
        "shop/scenarios/refund/1.0.0/templates/plain.yml",
        "apiVersion: scenarios.macp.dev/v1\nkind: ScenarioTemplate\nmetadata: {slug: plain}\n",
    );
    dir
}

pub(crate) fn snapshot(dir: &Path) -> Snapshot {
    let snapshot = Snapshot::load(dir);
    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    snapshot
}

pub(crate) fn reference(text: &str) -> ScenarioRef {
    ScenarioRef::parse(text).unwrap()
}
