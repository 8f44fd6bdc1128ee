"""Response cache: exact and semantic, streaming-aware, single-flight (docs/cache.md)."""
