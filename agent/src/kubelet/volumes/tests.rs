//! Root tests of the volume manager through its public API.
