//! Types shared by both kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret in the object's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret. It must be in the same namespace as the object that refers to it.
    pub name: String,
}

/// What happens to the copies the operator made when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the copies (default). In-flight work is still cancelled where the provider can.
    #[default]
    Retain,
    /// Remove the copies the operator made, then release the object.
    Delete,
}

/// Schema of a `metav1.Condition` list: a map keyed by `type`, as kstatus and
/// `kubectl wait --for=condition=...` expect.
pub fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(serde_json::json!({
        "type": "array",
        "description": "Conditions in the metav1.Condition shape, one per type: Ready, Reconciling, Stalled, Validated (and Synced for ReplicaInstance).",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."},
                "message": {"type": "string", "description": "Human-readable detail."},
                "observedGeneration": {"type": "integer", "format": "int64", "description": "The generation the condition was computed from."},
                "reason": {"type": "string", "description": "CamelCase reason for the condition's last transition."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                "type": {"type": "string", "description": "Condition type."}
            }
        }
    }))
    .expect("static schema is valid")
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
