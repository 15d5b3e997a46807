//! The account a cloud provider acts for, and the error every provider call returns.

use std::collections::BTreeMap;
use std::time::Duration;

/// How long refused credentials wait before they are tried again: 5 minutes, doubling to 1
/// hour (a wrong password tried once a minute would trip a lockout policy).
pub fn auth_backoff(failures: u32) -> Duration {
    (Duration::from_secs(300) * 2u32.saturating_pow(failures.saturating_sub(1).min(8))).min(Duration::from_secs(3600))
}

/// A provider error. `retryable` errors (5xx, connection, throttling) are tried again with
/// backoff; others fail the destination at once. Messages never carry secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub retryable: bool,
    pub not_found: bool,
    /// The cloud refused the credentials (or their rights): trying again with the same Secret
    /// cannot help and may lock the account, so the engine backs off far and waits for the
    /// Secret to change.
    pub auth: bool,
    /// The cloud is not set up for this yet in a way its admin can fix (OpenStack: a region
    /// the Keystone catalog does not have): tried again on a slow schedule, no attempt counted.
    pub setup: bool,
    /// The cloud's own error code, when it gave one (`FailedOperation.AccountAlreadyExists`):
    /// what a provider decides on, never the message.
    pub code: Option<String>,
    pub message: String,
}

impl ProviderError {
    /// The same error, carrying the cloud's code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        let code = code.into();
        self.code = (!code.is_empty()).then_some(code);
        self
    }
    /// Whether the cloud answered with `code`.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            not_found: false,
            auth: false,
            setup: false,
            code: None,
            message: message.into(),
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            not_found: false,
            auth: false,
            setup: false,
            code: None,
            message: message.into(),
        }
    }
    pub fn auth(message: impl Into<String>) -> Self {
        Self {
            auth: true,
            ..Self::permanent(message)
        }
    }
    pub fn setup(message: impl Into<String>) -> Self {
        Self {
            setup: true,
            ..Self::transient(message)
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            not_found: true,
            auth: false,
            setup: false,
            code: None,
            message: message.into(),
        }
    }
}

/// The account a provider acts for: the referenced Secret's data, the endpoint override and
/// provider extras. Debug output never shows the Secret's values.
#[derive(Clone, Default)]
pub struct Account {
    pub secret: BTreeMap<String, Vec<u8>>,
    pub endpoint: Option<String>,
    pub agency: Option<String>,
    /// Where short-lived keys in `secret` came from (`workload identity`, `role ...`), for
    /// messages and to know the account again when its keys are renewed; `None`: the keys are
    /// a Secret's own.
    pub identity: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("secret_keys", &self.secret.keys().collect::<Vec<_>>())
            .field("endpoint", &self.endpoint)
            .field("agency", &self.agency)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Account {
    /// A Secret value as text (trailing newline trimmed).
    pub fn text(&self, key: &str) -> Option<String> {
        self.secret
            .get(key)
            .map(|v| String::from_utf8_lossy(v).trim_end_matches('\n').to_string())
            .filter(|s| !s.is_empty())
    }

    /// What the account's credentials are, for messages: the Secret's name when they are a
    /// Secret's, else where the short-lived keys came from.
    pub fn credentials(&self, secret: &str) -> String {
        match &self.identity {
            Some(i) => i.clone(),
            None => format!("the credentials in Secret {secret}"),
        }
    }
}
