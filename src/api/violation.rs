//! A broken rule of the API, as validation and the clouds' source rules report it: the field,
//! a CamelCase reason and a message a person can act on.

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// JSON path of the field, e.g. `spec.destinations[1].region`.
    pub field: String,
    /// CamelCase reason, used as the condition reason and the Event reason.
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Violation {
    pub fn new(field: impl Into<String>, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.reason)
    }
}

/// Summarise violations as one condition reason and message.
pub fn summarize(violations: &[Violation]) -> (&'static str, String) {
    let reason = violations.first().map(|v| v.reason).unwrap_or("Invalid");
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    (reason, message)
}
