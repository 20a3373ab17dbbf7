//! `macp-control-plane keys create|list|revoke`: stored API keys, managed against the database
//! directly (how the first admin key is made, before any exists to call the API with). Each
//! change is audited as the local operator.

use std::process::ExitCode;

use clap::Subcommand;

use super::admin::{Admin, NewKey};
use super::audit::{self, Call, action};
use super::{ActorKind, Principal};
use crate::config::DatabaseArgs;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(flatten)]
    database: DatabaseArgs,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Store a new key and print it, once: only its SHA-256 is kept.
    Create {
        /// Who the key stands for (audit rows and `createdBy` name it).
        #[arg(long)]
        actor: String,
        /// viewer, operator, admin or agent; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A participant id an agent key sends and reads as; repeat for several.
        #[arg(long = "participant")]
        participants: Vec<String>,
    },
    /// List stored keys (never the keys themselves).
    List,
    /// Revoke a stored key by id, at once.
    Revoke { id: String },
}

pub async fn run(args: KeysArgs) -> ExitCode {
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(args: KeysArgs) -> Result<(), String> {
    let url = &args.database.database_url;
    let store = Store::connect_with(url.expose_secret(), &args.database.store_options())
        .await
        .map_err(|error| url.redact_in(&error.to_string()))?;
    store.migrate().await.map_err(|error| error.to_string())?;
    let admin = Admin::new(store, None);
    let json = args.json;
    let print = |value: serde_json::Value| -> Result<(), String> {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|error| error.to_string())?
        );
        Ok(())
    };
    match args.command {
        KeysCommand::Create {
            actor,
            roles,
            participants,
        } => {
            let new = NewKey {
                actor,
                roles,
                participants,
            };
            let created = audit::scope(local_call("key.create"), admin.create_key(new))
                .await
                .map_err(|error| error.to_string())?;
            if json {
                return print(serde_json::json!(created));
            }
            println!("{}", created.key);
            eprintln!(
                "stored key {} for {} ({}); the key above is shown once and kept nowhere",
                created.info.id,
                crate::cli::render::printable(&created.info.actor),
                created.info.roles.join(", ")
            );
        }
        KeysCommand::List => {
            let keys = admin.keys().await.map_err(|error| error.to_string())?;
            if json {
                return print(serde_json::json!({ "data": keys }));
            }
            for key in keys {
                let revoked = key
                    .revoked_at
                    .map(|at| format!(" revoked {}", crate::time::format(&at)))
                    .unwrap_or_default();
                println!(
                    "{}  {}…  {}  [{}]{}{}",
                    key.id,
                    key.prefix,
                    crate::cli::render::printable(&key.actor),
                    key.roles.join(","),
                    if key.participants.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " as {}",
                            crate::cli::render::printable(&key.participants.join(","))
                        )
                    },
                    revoked
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let revoked = audit::scope(local_call("key.revoke"), admin.revoke_key(&id))
                .await
                .map_err(|error| error.to_string())?;
            if json {
                return print(serde_json::json!(revoked));
            }
            println!("revoked {}", revoked.id);
        }
    }
    Ok(())
}

/// The local operator, who reached the database itself.
fn local_call(name: &'static str) -> std::sync::Arc<Call> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    Call::new(
        Principal {
            actor: format!("cli:{user}"),
            kind: ActorKind::Local,
            roles: vec![super::Role::Admin],
            participants: Vec::new(),
        },
        uuid::Uuid::new_v4().to_string(),
        action(name, "key"),
    )
}
