//! CRI container config + image config → OCI runtime spec.
