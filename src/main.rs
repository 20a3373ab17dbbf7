#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use macp_control_plane::app::{App, AppConfig};
use macp_control_plane::config::{self, DatabaseArgs, ServeArgs};
use macp_control_plane::store::Store;

/// mimalloc rather than glibc's allocator: the service allocates and frees many small buffers
/// per envelope across threads (see ARCHITECTURE.md, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Control plane for the MACP runtime: run lifecycle, live streams, replay and a scenario
/// registry, over gRPC (with reflection and grpc-web) and REST/SSE on one port.
#[derive(Parser)]
#[command(name = "macp-control-plane", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API. With no RUNTIME_ADDRESS the MACP reference runtime runs in-process; with
    /// no DATABASE_URL runs are kept in a SQLite file in the working directory.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Author scenario packs: scaffold, validate, lint and dry-run scenarios.
    #[command(subcommand)]
    Scenario(macp_control_plane::registry::cli::ScenarioCommand),
    /// Operate runs on a running service over its gRPC API: start, list, get, watch, cancel,
    /// replay, events.
    Runs(macp_control_plane::cli::RunsCommand),
    /// Manage stored API keys in the database: create (prints the key once), list, revoke.
    Keys(macp_control_plane::auth::cli::KeysArgs),
    /// Serve the MACP reference runtime alone (gRPC), configured like the `macp-runtime` binary
    /// by its environment variables (MACP_BIND_ADDR, MACP_ALLOW_INSECURE, MACP_MEMORY_ONLY,
    /// MACP_DATA_DIR, MACP_AUTH_TOKENS_JSON, ...): a drop-in for that binary.
    Runtime,
    /// Measure a control plane: play agents' decision sessions against a MACP runtime at a
    /// target rate and time each message's arrival on the control plane's SSE streams.
    Loadgen(macp_control_plane::loadgen::LoadgenArgs),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let command = match config::apply_file_defaults(Cli::command(), "serve", &args) {
        Ok(command) => command,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = match command
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await.map(|()| ExitCode::SUCCESS),
            Command::Migrate(args) => migrate(args).await.map(|()| ExitCode::SUCCESS),
            Command::Scenario(command) => Ok(macp_control_plane::registry::cli::run(command).await),
            Command::Runs(command) => Ok(macp_control_plane::cli::run(command).await),
            Command::Keys(args) => Ok(macp_control_plane::auth::cli::run(args).await),
            Command::Runtime => macp_control_plane::runtime::standalone::run().await,
            Command::Loadgen(args) => Ok(macp_control_plane::loadgen::main(args).await),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    macp_control_plane::telemetry::init_logging(&args.log_format, &args.log_level);
    let started = std::time::Instant::now();
    let config = AppConfig::from_args(&args).map_err(|error| error.to_string())?;
    // Before anything is served, so that no signal finds the default action (an abrupt exit).
    let mut signals =
        Signals::listen().map_err(|error| format!("cannot listen for signals: {error}"))?;
    let app = App::start(config)
        .await
        .map_err(|error| error.to_string())?;
    tracing::info!(
        address = %app.address,
        runtime = ?app.embedded_runtime().map(|address| format!("embedded at {address}")).unwrap_or_else(|| "external".to_owned()),
        startup_ms = started.elapsed().as_millis() as u64,
        "macp-control-plane listening (gRPC, grpc-web and REST)"
    );
    signals.next().await;
    tracing::info!("shutting down");
    tokio::select! {
        () = app.stop() => {}
        () = signals.next() => {
            tracing::warn!("second signal: exiting at once");
            // Whatever was committed stays committed; runs resume from the store on restart.
            std::process::exit(130);
        }
    }
    Ok(())
}

async fn migrate(args: DatabaseArgs) -> Result<(), String> {
    let store = Store::connect_with(args.database_url.expose_secret(), &args.store_options())
        .await
        .map_err(|error| args.database_url.redact_in(&error.to_string()))?;
    store.migrate().await.map_err(|error| error.to_string())?;
    // DatabaseUrl displays without the password.
    println!("migrations applied to {}", args.database_url);
    Ok(())
}

/// SIGTERM and SIGINT, listened for once for the process's life, so a second signal that
/// comes while the first is being handled is not lost.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
