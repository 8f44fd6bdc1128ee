"""Events: the schema, the producer side, and the pipeline into ClickHouse."""
