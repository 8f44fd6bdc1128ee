"""Questions about usage, answered from ClickHouse: `params` (request parsing, bounded),
`queries` (the SQL, bound parameters only). Handlers: `watchllm/routes/analytics.py`."""
