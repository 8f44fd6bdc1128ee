"""WatchLLM: an OpenAI-compatible LLM gateway with caching, limits, cost accounting and
lossless observability in ClickHouse.

The package root stays import-light (the SDK in `watchllm.sdk` must import without the
server's dependencies); the server is built with `watchllm.app.Gateway`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
