//! Pod → CRI conversion, as the kubelet's kuberuntime does it (being built).

pub mod error;
pub mod quantity;

pub use error::{ConvertError, Problem};
pub use quantity::{Amount, QuantityError};
