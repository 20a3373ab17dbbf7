//! Runtime credentials per sender. The runtime binds every message to the identity of its bearer
//! token, so each kickoff or agent message is sent with its sender's own credential.
//!
//! Tokens are secrets: they are held as `SecretString` (redacted by `Debug`, zeroed on drop) and
//! come out only as a [`Bearer`], whose text is exposed where the request header is built.

use std::collections::HashMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

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
        by_sender: HashMap<String, SecretString>,
        observer_token: SecretString,
    },
}

// Senders are not secret and help an operator see what is configured; tokens are never shown.
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

/// The value of one `authorization: Bearer …` header: a token, or a sender id in dev mode.
#[derive(Clone, Copy)]
pub struct Bearer<'a>(&'a str);

impl<'a> Bearer<'a> {
    /// The credential's text, for the one place that puts it on the wire.
    pub fn expose_secret(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Bearer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer([REDACTED])")
    }
}

impl Credentials {
    /// A token table: sender → token, and the control plane's own token.
    pub fn tokens(by_sender: HashMap<String, String>, observer_token: String) -> Credentials {
        Credentials::Tokens {
            by_sender: by_sender
                .into_iter()
                .map(|(sender, token)| (sender, SecretString::from(token)))
                .collect(),
            observer_token: SecretString::from(observer_token),
        }
    }

    /// The bearer credential for `sender`, or `None` when no credential is configured for it.
    pub fn bearer_for<'a>(&'a self, sender: &'a str) -> Option<Bearer<'a>> {
        match self {
            Credentials::Dev { .. } => Some(Bearer(sender)),
            Credentials::Tokens { by_sender, .. } => by_sender
                .get(sender)
                .map(|token| Bearer(token.expose_secret())),
        }
    }

    /// The control plane's own bearer credential.
    pub fn observer_bearer(&self) -> Bearer<'_> {
        match self {
            Credentials::Dev { observer } => Bearer(observer),
            Credentials::Tokens { observer_token, .. } => Bearer(observer_token.expose_secret()),
        }
    }

    pub fn can_send_as(&self, sender: &str) -> bool {
        self.bearer_for(sender).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Credentials {
        Credentials::tokens(
            HashMap::from([
                ("agent-a".to_owned(), "s3cret-a".to_owned()),
                ("agent-b".to_owned(), "s3cret-b".to_owned()),
            ]),
            "s3cret-observer".to_owned(),
        )
    }

    #[test]
    fn debug_output_never_contains_tokens() {
        let credentials = table();
        for printed in [format!("{credentials:?}"), format!("{credentials:#?}")] {
            assert!(printed.contains("agent-a"), "{printed}");
            assert!(!printed.contains("s3cret"), "{printed}");
        }
        let bearer = credentials.bearer_for("agent-a").expect("configured");
        assert_eq!(format!("{bearer:?}"), "Bearer([REDACTED])");
        let observer = credentials.observer_bearer();
        assert!(!format!("{observer:?}").contains("s3cret"));
    }

    #[test]
    fn tokens_are_exposed_for_their_own_sender_only() {
        let credentials = table();
        let bearer = |sender| {
            credentials
                .bearer_for(sender)
                .map(|bearer| bearer.expose_secret())
        };
        assert_eq!(bearer("agent-a"), Some("s3cret-a"));
        assert_eq!(bearer("agent-b"), Some("s3cret-b"));
        assert_eq!(bearer("agent-c"), None);
        assert!(!credentials.can_send_as("agent-c"));
        assert_eq!(
            credentials.observer_bearer().expose_secret(),
            "s3cret-observer"
        );
    }

    #[test]
    fn dev_mode_uses_the_sender_as_bearer() {
        let credentials = Credentials::Dev {
            observer: "cp".to_owned(),
        };
        assert_eq!(
            credentials
                .bearer_for("fraud-agent")
                .map(|bearer| bearer.expose_secret()),
            Some("fraud-agent")
        );
        assert_eq!(credentials.observer_bearer().expose_secret(), "cp");
    }
}
