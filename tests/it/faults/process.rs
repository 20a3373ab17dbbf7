//! `macp-control-plane serve` as a child process: started on a port of its own choosing,
//! found by its "listening" log line, and stopped by PID (SIGTERM or SIGKILL).

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

const BINARY: &str = env!("CARGO_BIN_EXE_macp-control-plane");
const STARTUP: Duration = Duration::from_secs(60);

pub struct Service {
    child: tokio::process::Child,
    pub base: String,
}

impl Service {
    /// `serve` with `env` (and nothing inherited), JSON logs, the repository's packs.
    pub async fn spawn(env: &[(&str, String)]) -> Service {
        let mut command = tokio::process::Command::new(BINARY);
        command
            .arg("serve")
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "info")
            .env("PACKS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/packs"))
            // Several of these share the test server's connections with the tests beside them.
            .env("POSTGRES_POOL_SIZE", "6")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("serve starts");
        // Both streams are read to their end, so that logging never blocks the process.
        let (lines, mut received) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for mut reader in [
            BufReader::new(Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
                .lines(),
            BufReader::new(Box::new(stderr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>)
                .lines(),
        ] {
            let lines = lines.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = reader.next_line().await {
                    let _ = lines.send(line);
                }
            });
        }
        drop(lines);
        let address = tokio::time::timeout(STARTUP, async {
            let mut seen = Vec::new();
            while let Some(line) = received.recv().await {
                if let Ok(log) = serde_json::from_str::<Value>(&line)
                    && log["fields"]["message"]
                        .as_str()
                        .is_some_and(|message| message.starts_with("macp-control-plane listening"))
                    && let Some(address) = log["fields"]["address"].as_str()
                {
                    return address.to_owned();
                }
                seen.push(line);
            }
            panic!("serve exited without listening: {seen:#?}");
        })
        .await
        .expect("serve listens within 60 s");
        // The rest of the log is drained and dropped.
        tokio::spawn(async move { while received.recv().await.is_some() {} });
        Service {
            child,
            base: format!("http://{address}"),
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// SIGKILL by PID: no drain, nothing flushed (a crash, an OOM kill).
    pub async fn kill(mut self) {
        self.signal("KILL");
        self.child.wait().await.expect("waits");
    }

    /// SIGTERM by PID (`twice`: a second one right after); how long the process took to
    /// exit, and how it exited.
    pub async fn terminate(mut self, twice: bool) -> (Duration, ExitStatus) {
        self.signal("TERM");
        let sent = Instant::now();
        if twice {
            // Two signals sent back to back may arrive as one (pending signals of a kind
            // coalesce): the second is sent once the first is being handled, which the listener
            // closing (the stop's first step) shows.
            let address = self.base.trim_start_matches("http://").to_owned();
            poll(Duration::from_secs(5), "the listener closes", || {
                let address = address.clone();
                async move {
                    tokio::net::TcpStream::connect(address)
                        .await
                        .err()
                        .map(drop)
                }
            })
            .await;
            self.signal("TERM");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s of SIGTERM")
            .expect("waits");
        (sent.elapsed(), status)
    }
}

/// Polls `check` until it answers `Some`, at most `within`; what it answered.
pub async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
