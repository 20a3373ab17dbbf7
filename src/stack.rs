//! Which implementation carries live streams: the hand-written server and hub channel, or the
//! libraries' (hyper-util's connection builder with its stock executor, tokio's broadcast
//! channel). Both stay so the streams benchmark can measure one against the other in one run
//! (ARCHITECTURE.md, "The transport A/B").

/// The live-stream transport (`--stack`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// Connection turns with batched writes (`api::server`), the ring hub channel.
    #[default]
    Custom,
    /// hyper-util's auto builder with `TokioExecutor`, tokio's broadcast channel.
    Library,
}
