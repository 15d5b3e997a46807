//! The crate's error type.

use thiserror::Error;

/// Errors of the operator. `category()` feeds metric labels and Event reasons, so it is a small
/// fixed set; messages never carry secret values.
#[derive(Error, Debug)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),
    #[error("provider error: {0}")]
    Provider(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The cleanup behind the finalizer cannot finish yet (a destination unreachable, a copy
    /// that cannot be cancelled still running): not a failure; status says so, and the object
    /// is looked at again (a requeue, not a reconcile error).
    #[error("cleanup blocked: {0}")]
    CleanupBlocked(Blocked),
}

/// Why a delete cannot finish yet, as data: the destination region it is about (if one) and
/// the prose. The status marks that region's destination from `region`, never from the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub region: Option<String>,
    pub message: String,
}

impl Blocked {
    /// Blocked by the destination in `region`.
    pub fn at(region: &str, message: impl Into<String>) -> Self {
        Self {
            region: Some(region.to_string()),
            message: message.into(),
        }
    }
}

/// Blocked by nothing one destination names (a Secret, the object as a whole).
impl From<String> for Blocked {
    fn from(message: String) -> Self {
        Self { region: None, message }
    }
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.region {
            Some(r) => write!(f, "{r}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

impl Error {
    /// Every value of [`Error::category`] (the metric's label values, seeded at zero).
    pub const CATEGORIES: [&'static str; 4] = ["kube", "provider", "timeout", "cleanup_blocked"];

    /// A fixed, low-cardinality name for metrics and events.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Provider(_) => "provider",
            Self::Timeout(_) => "timeout",
            Self::CleanupBlocked(_) => "cleanup_blocked",
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every category an error can have is seeded (and nothing else: "finalizer" was seeded
    /// and never produced).
    #[test]
    fn the_categories_are_the_ones_errors_have() {
        let all = [
            Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::Provider(String::new()),
            Error::Timeout("x"),
            Error::CleanupBlocked(Blocked::from(String::new())),
        ];
        let made: Vec<&str> = all.iter().map(Error::category).collect();
        assert_eq!(made, Error::CATEGORIES);
    }
}
