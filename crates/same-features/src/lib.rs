//! No code. This crate's dependencies ask for the features that attn's
//! dev-dependencies turn on, so `cargo build --bin attn` and
//! `cargo test --workspace` share one build of each dependency (see its
//! Cargo.toml).
