//! The conversion error: which field of the pod is wrong, and how.

use super::quantity::QuantityError;

/// A pod that cannot be turned into CRI configs; `field` is the JSON path of the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConvertError {
    /// Path of the offending field, e.g. `spec.containers[web].resources.limits.memory`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A resource quantity that does not parse.
    #[error("invalid quantity {value:?}: {reason}")]
    Quantity {
        /// The text as written.
        value: String,
        /// Why it was refused.
        reason: QuantityError,
    },
    /// A referenced ConfigMap or Secret, or a key of one, does not exist (and is not optional).
    #[error("{0}")]
    Missing(String),
    /// A value outside what the field accepts.
    #[error("{0}")]
    Invalid(String),
}

impl ConvertError {
    /// An error about `field` with a free-form explanation.
    pub fn invalid(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: Problem::Invalid(why.into()),
        }
    }

    /// An error about a quantity at `field` that does not parse.
    pub fn quantity(field: impl Into<String>, value: &str, reason: QuantityError) -> Self {
        Self {
            field: field.into(),
            problem: Problem::Quantity {
                value: value.to_owned(),
                reason,
            },
        }
    }

    /// An error about `field` referencing something that does not exist.
    pub fn missing(field: impl Into<String>, what: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: Problem::Missing(what.into()),
        }
    }
}
