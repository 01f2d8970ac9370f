// Empty: cargo resolves [build-dependencies] (the proc macros' syn
// features, see Cargo.toml) only for a package with a build script.
fn main() {}
