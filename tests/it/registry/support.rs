//! Helpers shared by the registry tests.

use std::path::{Path, PathBuf};

use macp_control_plane::api::proto::scenario_registry_client::ScenarioRegistryClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::support::TestApp;

/// The repository's sample packs.
pub fn sample_packs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packs")
}

/// A gRPC client of the served `ScenarioRegistry` service.
pub async fn registry_client(app: &TestApp) -> ScenarioRegistryClient<Channel> {
    ScenarioRegistryClient::connect(app.base.clone())
        .await
        .expect("grpc connects")
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The same value with every number as a float, so `1` and `1.0` compare equal.
pub fn numbers_by_value(value: &Value) -> Value {
    match value {
        Value::Number(number) => number.as_f64().map_or(Value::Null, Value::from),
        Value::Array(items) => Value::Array(items.iter().map(numbers_by_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), numbers_by_value(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}
