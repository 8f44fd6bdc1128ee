//! WatchLLM hot path: pure-Rust functions, wrapped for Python in `py.rs`.

#[cfg(feature = "python")]
mod py;

/// Version of the core, reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
