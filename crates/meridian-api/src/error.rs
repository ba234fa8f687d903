//! The crate's error type.

/// Errors from interpreting values of the Meridian resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// A memory size that is not a whole number of bytes in Kubernetes quantity notation.
    #[error(
        "invalid byte quantity {value:?}: {reason} (expected e.g. 256Mi, 2Gi, 500M or 1073741824)"
    )]
    InvalidQuantity {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
