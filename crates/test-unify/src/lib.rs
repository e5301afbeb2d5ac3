//! Empty on purpose: see this crate's Cargo.toml (feature alignment for the C ABI test's build).
