//! Runtime credentials per sender. The runtime binds every message to the identity of its bearer
//! token, so each kickoff or agent message is sent with its sender's own credential.

use std::collections::HashMap;
use std::fmt;

/// How the control plane authenticates to the runtime.
#[derive(Clone)]
pub enum Credentials {
    /// The runtime's dev mode: the bearer value *is* the sender id.
    Dev {
        /// The control plane's own identity (used for session-wide watches).
        observer: String,
    },
    /// A static token per sender, plus the control plane's own token.
    Tokens {
        by_sender: HashMap<String, String>,
        observer_token: String,
    },
}

// Tokens are secrets: never print them.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Dev { observer } => f
                .debug_struct("Credentials::Dev")
                .field("observer", observer)
                .finish(),
            Credentials::Tokens { by_sender, .. } => {
                let mut senders: Vec<&String> = by_sender.keys().collect();
                senders.sort();
                f.debug_struct("Credentials::Tokens")
                    .field("senders", &senders)
                    .finish_non_exhaustive()
            }
        }
    }
}

impl Credentials {
    /// The bearer token for `sender`, or `None` when no credential is configured for it.
    pub fn bearer_for(&self, sender: &str) -> Option<String> {
        match self {
            Credentials::Dev { .. } => Some(sender.to_owned()),
            Credentials::Tokens { by_sender, .. } => by_sender.get(sender).cloned(),
        }
    }

    /// The control plane's own bearer token.
    pub fn observer_bearer(&self) -> String {
        match self {
            Credentials::Dev { observer } => observer.clone(),
            Credentials::Tokens { observer_token, .. } => observer_token.clone(),
        }
    }

    pub fn can_send_as(&self, sender: &str) -> bool {
        self.bearer_for(sender).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_tokens() {
        let credentials = Credentials::Tokens {
            by_sender: HashMap::from([("agent-a".to_owned(), "s3cret-a".to_owned())]),
            observer_token: "s3cret-observer".to_owned(),
        };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("agent-a"));
        assert!(!printed.contains("s3cret"));
    }

    #[test]
    fn dev_mode_uses_the_sender_as_bearer() {
        let credentials = Credentials::Dev {
            observer: "cp".to_owned(),
        };
        assert_eq!(
            credentials.bearer_for("fraud-agent").as_deref(),
            Some("fraud-agent")
        );
        assert_eq!(credentials.observer_bearer(), "cp");
    }
}
