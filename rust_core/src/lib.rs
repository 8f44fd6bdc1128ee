//! WatchLLM hot path: pure-Rust functions, wrapped for Python in `py.rs`.
//!
//! Each module owns one concern and has no pyo3 dependency, so `cargo test`
//! runs without Python.

pub mod cache_key;
pub mod rowbinary;
pub mod similarity;
pub mod stream;
pub mod tokens;

#[cfg(feature = "python")]
mod py;

/// Version of the core, reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
