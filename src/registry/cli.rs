//! `macp-control-plane scenario …`: authoring commands for scenario packs. Human output by
//! default, `--json` for machines; the exit code is non-zero when something is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::error::FieldError;

use super::checks::{self, Diagnostic, Severity};
use super::compiler::{CompileRequest, RunMode};
use super::error::Error;
use super::loader::Snapshot;
use super::scaffold::scaffold;
use super::service::{Registry, RegistryOptions};

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Scaffold a new scenario version from a starter that validates as is
    New {
        /// Pack slug (created with a pack.yaml if missing)
        pack: String,
        /// Scenario slug
        slug: String,
        #[arg(long, default_value = "1.0.0")]
        version: String,
        #[command(flatten)]
        common: Common,
    },
    /// Check one scenario version: its scenario.yaml or the directory holding it
    Validate {
        path: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Check every pack, scenario and agent under the packs directory
    Lint {
        #[command(flatten)]
        common: Common,
    },
    /// The packs tree's governance policies (`_policies/*.json`)
    Policies {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Compile a scenario and print the ExecutionRequest, without starting a run
    DryRun {
        /// pack/scenario@version
        scenario_ref: String,
        /// Template slug to apply
        #[arg(long)]
        template: Option<String>,
        /// Inputs as a JSON object, or @file to read them from a file
        #[arg(long)]
        inputs: Option<String>,
        #[arg(long, value_parser = ["live", "sandbox"])]
        mode: Option<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Register each with the runtime through a running control plane (`RegisterPolicy`, an
    /// admin's call); one already registered is left as it is
    Register {
        /// The control plane's gRPC address (`host:port` or URL)
        #[arg(long, env = "MACP_ADDRESS", default_value = "http://127.0.0.1:3001")]
        address: String,
        /// API key, sent as `authorization: Bearer <key>`
        #[arg(
            long,
            env = "MACP_API_KEY",
            hide_env_values = true,
            hide_default_value = true
        )]
        api_key: Option<SecretString>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Args)]
pub struct Common {
    /// Root of the scenario packs tree
    #[arg(long, env = "PACKS_DIR", default_value = "packs")]
    packs_dir: PathBuf,
    /// Print machine-readable JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(command: ScenarioCommand) -> ExitCode {
    match command {
        ScenarioCommand::Policies {
            command:
                PolicyCommand::Register {
                    address,
                    api_key,
                    common,
                },
        } => register_policies(&common, crate::cli::Connection::new(address, api_key)).await,
        ScenarioCommand::New {
            pack,
            slug,
            version,
            common,
        } => new(&common, &pack, &slug, &version),
        ScenarioCommand::Validate { path, common } => {
            match checks::validate_path(&common.packs_dir, &path) {
                Ok(diagnostics) => report(
                    &common,
                    &format!("scenario validate  {}", path.display()),
                    &diagnostics,
                ),
                Err(message) => fail(&common, &message),
            }
        }
        ScenarioCommand::Lint { common } => {
            let snapshot = Snapshot::load(&common.packs_dir);
            let title = format!(
                "scenario lint  {} pack(s) in {}",
                snapshot.packs.len(),
                common.packs_dir.display()
            );
            report(&common, &title, &checks::lint(&snapshot))
        }
        ScenarioCommand::DryRun {
            scenario_ref,
            template,
            inputs,
            mode,
            common,
        } => dry_run(
            &common,
            scenario_ref,
            template,
            inputs.as_deref(),
            mode.as_deref(),
        ),
    }
}

fn new(common: &Common, pack: &str, slug: &str, version: &str) -> ExitCode {
    let scaffold = match scaffold(&common.packs_dir, pack, slug, version) {
        Ok(scaffold) => scaffold,
        Err(message) => return fail(common, &message),
    };
    if common.json {
        print_json(&json!({
            "ok": true,
            "scenarioRef": scaffold.reference,
            "directory": scaffold.directory,
            "created": scaffold.created,
        }));
    } else {
        println!(
            "scenario new  scaffolded {} in {}",
            scaffold.reference,
            scaffold.directory.display()
        );
        for file in &scaffold.created {
            println!("  created {}", file.display());
        }
        println!(
            "next: edit {}, then run `scenario validate` on it",
            scaffold.directory.join("scenario.yaml").display()
        );
    }
    ExitCode::SUCCESS
}

fn dry_run(
    common: &Common,
    scenario_ref: String,
    template: Option<String>,
    inputs: Option<&str>,
    mode: Option<&str>,
) -> ExitCode {
    let registry = Registry::new(RegistryOptions::new(&common.packs_dir));
    let result = read_inputs(inputs).and_then(|inputs| {
        registry.compile(&CompileRequest {
            scenario_ref,
            template_id: template,
            mode: mode.map(|mode| {
                if mode == "live" {
                    RunMode::Live
                } else {
                    RunMode::Sandbox
                }
            }),
            inputs,
        })
    });
    match result {
        Ok(compiled) if common.json => print_json(&json!(compiled)),
        Ok(compiled) => print_json(&compiled.execution_request),
        Err(error) => {
            let api = error.to_api_error();
            if common.json {
                print_json(&api.body());
            } else {
                eprintln!("{api}");
                if let Some(details) = &api.details {
                    eprintln!("{}", pretty(details));
                }
            }
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `--inputs '{"a":1}'` or `--inputs @file.json`; none means `{}`.
fn read_inputs(inputs: Option<&str>) -> Result<serde_json::Map<String, Value>, Error> {
    let invalid = |message: String| Error::InvalidRequest(vec![FieldError::new("inputs", message)]);
    let Some(inputs) = inputs else {
        return Ok(serde_json::Map::new());
    };
    let text = match inputs.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(Path::new(file))
            .map_err(|error| invalid(format!("cannot read {file}: {error}")))?,
        None => inputs.to_owned(),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(inputs)) => Ok(inputs),
        Ok(_) => Err(invalid("must be a JSON object".to_owned())),
        Err(error) => Err(invalid(format!("invalid JSON: {error}"))),
    }
}

/// Registers the tree's policies one by one, reporting each: registered, already there (the
/// runtime answers CONFLICT for a taken id), or refused with the runtime's reason.
async fn register_policies(common: &Common, connection: crate::cli::Connection) -> ExitCode {
    let registry = Registry::new(RegistryOptions::new(common.packs_dir.clone()));
    let policies = match registry.policies() {
        Ok(policies) => policies,
        Err(error) => return fail(common, &error.to_string()),
    };
    let mut client = match connection.connect().await {
        Ok(client) => client,
        Err(failure) => return fail(common, &failure.message),
    };
    let mut outcomes = Vec::with_capacity(policies.len());
    for policy in &policies {
        let (outcome, message) = match serde_json::from_value::<
            crate::api::proto::RegisterPolicyRequest,
        >(policy.body.clone())
        {
            Err(error) => ("refused", Some(error.to_string())),
            Ok(request) => match client.register_policy(request).await {
                Ok(_) => ("registered", None),
                Err(status)
                    if status
                        .metadata()
                        .get("x-error-code")
                        .is_some_and(|code| code == "CONFLICT") =>
                {
                    ("already registered", None)
                }
                Err(status) => ("refused", Some(status.message().to_owned())),
            },
        };
        let mut row =
            json!({"policyId": policy.policy_id, "file": policy.file, "outcome": outcome});
        if let (Some(message), Some(map)) = (message, row.as_object_mut()) {
            map.insert("message".to_owned(), message.into());
        }
        outcomes.push(row);
    }
    let refused = outcomes
        .iter()
        .filter(|outcome| outcome["outcome"] == "refused")
        .count();
    if common.json {
        print_json(&json!({"ok": refused == 0, "policies": outcomes}));
    } else {
        println!(
            "scenario policies register  {} policy file(s)",
            outcomes.len()
        );
        for outcome in &outcomes {
            let message = outcome["message"]
                .as_str()
                .map(|message| format!(": {message}"))
                .unwrap_or_default();
            println!(
                "  {}  {}{message}",
                outcome["policyId"].as_str().unwrap_or_default(),
                outcome["outcome"].as_str().unwrap_or_default()
            );
        }
    }
    if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(common: &Common, title: &str, diagnostics: &[Diagnostic]) -> ExitCode {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    if common.json {
        print_json(
            &json!({"ok": errors == 0, "errors": errors, "warnings": warnings, "diagnostics": diagnostics}),
        );
    } else {
        println!("{title}");
        for diagnostic in diagnostics {
            let label = if diagnostic.severity == Severity::Error {
                "FAIL"
            } else {
                "WARN"
            };
            println!("  {label}  {}", diagnostic.location);
        }
        match (errors, warnings) {
            (0, 0) => println!("  OK"),
            (0, warnings) => println!("  PASS ({warnings} warning(s))"),
            (errors, warnings) => println!("  FAILED ({errors} error(s), {warnings} warning(s))"),
        }
    }
    if errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(common: &Common, message: &str) -> ExitCode {
    if common.json {
        print_json(&json!({"ok": false, "message": message}));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::FAILURE
}

fn print_json(value: &Value) {
    println!("{}", pretty(value));
}

fn pretty(value: &Value) -> String {
    // Serializing a `Value` cannot fail; fall back to the compact form all the same.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}
