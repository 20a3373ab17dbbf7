//! The operator CLI (`macp-control-plane runs …`): a gRPC client of a running service. The
//! command logic is in [`runs`], the text it prints in [`render`]; this module holds what every
//! command shares: the connection, the API key, and the terminal (spinner, status line, output).

pub mod render;
pub mod runs;

use std::borrow::Cow;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::api::proto::control_plane_client::ControlPlaneClient;
use render::Failure;

pub use runs::{RunsCommand, run};

/// How long to wait for the service to accept a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Event pages can be large (`runs events --limit` up to the service's maximum); tonic's 4 MiB
/// default would refuse a page the service is willing to send.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Where the service is and who is calling; shared by every `runs` command.
#[derive(Args)]
pub struct Connection {
    /// The service's gRPC address (`host:port` or URL)
    #[arg(
        long,
        env = "MACP_ADDRESS",
        default_value = "http://127.0.0.1:3001",
        global = true
    )]
    address: String,
    /// API key, sent as `authorization: Bearer <key>` on every call
    #[arg(
        long,
        env = "MACP_API_KEY",
        hide_env_values = true,
        hide_default_value = true,
        global = true
    )]
    api_key: Option<SecretString>,
    /// Machine-readable output: proto3 JSON (NDJSON for streams; errors as JSON on stderr)
    #[arg(long, global = true)]
    json: bool,
}

/// Adds the API key to every call (a sensitive header value: its Debug is redacted and
/// HTTP/2 never puts it in the header compression table).
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = ControlPlaneClient<InterceptedService<Channel, Auth>>;

impl Connection {
    /// A connection made elsewhere than from `runs`' flags (`scenario policies register`).
    pub(crate) fn new(address: String, api_key: Option<SecretString>) -> Connection {
        Connection {
            address,
            api_key,
            json: false,
        }
    }

    fn url(&self) -> String {
        if self.address.contains("://") {
            self.address.clone()
        } else {
            format!("http://{}", self.address)
        }
    }

    /// Connects eagerly, so an unreachable service is reported as such rather than as the
    /// first call's failure.
    pub(crate) async fn connect(&self) -> Result<Client, Failure> {
        let url = self.url();
        let invalid = |message: String| Failure::new("INVALID_ARGUMENT", message);
        let auth = match &self.api_key {
            Some(key) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.expose_secret())
                    .parse()
                    // The key itself stays out of the message: it is a secret.
                    .map_err(|_| invalid("--api-key: not a valid header value".to_owned()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| invalid(format!("--address {url}: {error}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        if url.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|error| invalid(format!("--address {url}: {}", chain(&error))))?;
        }
        let channel = endpoint.connect().await.map_err(|error| {
            Failure::new(
                "UNAVAILABLE",
                format!("cannot connect to {url}: {}", chain(&error)),
            )
        })?;
        Ok(ControlPlaneClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_RESPONSE_BYTES))
    }
}

/// An error with its sources: tonic's transport errors say only "transport error" at the top.
/// Layers that repeat their source's text are said once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// A spinner on stderr while the CLI waits (connecting, a call, the first stream item), shown
/// only when stderr is a terminal and cleared when dropped.
struct Spinner(Option<ProgressBar>);

impl Spinner {
    fn start(message: impl Into<Cow<'static, str>>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        let bar = ProgressBar::new_spinner()
            .with_finish(ProgressFinish::AndClear)
            .with_message(message);
        bar.enable_steady_tick(Duration::from_millis(100));
        Spinner(Some(bar))
    }

    fn message(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Where stream output goes: on a terminal, lines scroll above a status line that is redrawn
/// in place; otherwise everything, status lines included, is plain lines.
enum Screen {
    Live(ProgressBar),
    Plain,
}

impl Screen {
    fn new(json: bool) -> Self {
        if json || !std::io::stdout().is_terminal() {
            return Screen::Plain;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        // The spinner shows the stream is alive between events.
        bar.enable_steady_tick(Duration::from_millis(200));
        Screen::Live(bar)
    }

    fn line(&self, line: &str) -> std::io::Result<()> {
        match self {
            Screen::Live(bar) => {
                bar.println(render::printable(line));
                Ok(())
            }
            Screen::Plain => print_line(line),
        }
    }

    fn status(&self, line: String) -> std::io::Result<()> {
        match self {
            Screen::Live(bar) => {
                bar.set_message(render::printable(&line).into_owned());
                Ok(())
            }
            Screen::Plain => print_line(&format!("-- {line}")),
        }
    }

    /// Leaves the last status line on screen.
    fn finish(&self) {
        if let Screen::Live(bar) = self {
            bar.finish();
        }
    }
}

/// One line on stdout, agent-written control characters escaped; a closed stdout (`… | head`)
/// is an error to stop on, not a panic.
fn print_line(line: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", render::printable(line))?;
    stdout.flush()
}

fn print_lines(lines: &[String]) -> std::io::Result<()> {
    lines.iter().try_for_each(|line| print_line(line))
}

/// Prints a failure the way the output mode asks: `error: CODE: message` lines, or JSON.
fn report(failure: &Failure, json: bool) {
    if json {
        eprintln!("{}", render::printable_json(&failure.json().to_string()));
    } else {
        for line in failure.lines() {
            eprintln!("{}", render::printable(&line));
        }
    }
}
