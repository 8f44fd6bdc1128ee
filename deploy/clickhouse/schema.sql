-- WatchLLM ClickHouse schema. Generated from watchllm/events/schema.py by
-- watchllm/events/clickhouse_schema.py; edit those, then `make migrations`.
-- Raw events expire after 90 days (WATCHLLM_EVENT_TTL_DAYS).
-- `watchllm migrate` also sets, on the raw tables, where the server knows it: merge_selector_base = 8.

CREATE TABLE IF NOT EXISTS events
(
    `event_id` String,
    `event_type` Enum8('prompt_call' = 1, 'tool_call' = 2, 'agent_step' = 3, 'error' = 4, 'assertion_failed' = 5, 'hallucination_detected' = 6, 'cost_threshold_exceeded' = 7, 'performance_alert' = 8),
    `project_id` LowCardinality(String),
    `timestamp` DateTime64(3, 'UTC'),
    `run_id` String,
    `user_id` String,
    `tags` Array(LowCardinality(String)),
    `release` String,
    `env` LowCardinality(String),
    `client_hostname` String,
    `client_sdk_version` LowCardinality(String),
    `client_platform` LowCardinality(String),
    `endpoint` LowCardinality(String),
    `prompt` String,
    `response` String,
    `model` LowCardinality(String),
    `provider` LowCardinality(String),
    `tokens_input` UInt32,
    `tokens_output` UInt32,
    `tokens_cached` UInt32,
    `cost_estimate_usd` Float64,
    `cost_saved_usd` Float64,
    `latency_ms` Float32,
    `time_to_first_token_ms` Nullable(Float32),
    `status` LowCardinality(String),
    `http_status` UInt16,
    `cache_status` Enum8('NONE' = 0, 'MISS' = 1, 'HIT' = 2, 'SEMANTIC_HIT' = 3, 'BYPASS' = 4),
    `request_id` String,
    `key_id` String,
    `error_type` LowCardinality(String),
    `error_message` String,
    `metadata` Map(String, String),
    `properties` String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, timestamp, event_id)
TTL toDateTime(timestamp) + toIntervalDay(90)
SETTINGS non_replicated_deduplication_window = 1000, vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1;

CREATE TABLE IF NOT EXISTS tool_calls
(
    `event_id` String,
    `project_id` LowCardinality(String),
    `timestamp` DateTime64(3, 'UTC'),
    `run_id` String,
    `tool_name` LowCardinality(String),
    `tool_input` String,
    `tool_output` String,
    `latency_ms` Float32,
    `status` LowCardinality(String),
    `error_message` String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, timestamp, event_id)
TTL toDateTime(timestamp) + toIntervalDay(90)
SETTINGS non_replicated_deduplication_window = 1000, vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1;

CREATE TABLE IF NOT EXISTS agent_steps
(
    `event_id` String,
    `project_id` LowCardinality(String),
    `timestamp` DateTime64(3, 'UTC'),
    `run_id` String,
    `step_number` UInt32,
    `step_name` String,
    `step_type` LowCardinality(String),
    `input` String,
    `output` String,
    `reasoning` String,
    `latency_ms` Float32,
    `status` LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project_id, timestamp, event_id)
TTL toDateTime(timestamp) + toIntervalDay(90)
SETTINGS non_replicated_deduplication_window = 1000, vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1;

CREATE TABLE IF NOT EXISTS usage_hourly
(
    `project_id` LowCardinality(String),
    `model` LowCardinality(String),
    `hour` DateTime('UTC'),
    `requests` SimpleAggregateFunction(sum, UInt64),
    `errors` SimpleAggregateFunction(sum, UInt64),
    `cache_hits` SimpleAggregateFunction(sum, UInt64),
    `tokens_input` SimpleAggregateFunction(sum, UInt64),
    `tokens_output` SimpleAggregateFunction(sum, UInt64),
    `tokens_cached` SimpleAggregateFunction(sum, UInt64),
    `cost_usd` SimpleAggregateFunction(sum, Float64),
    `cost_saved_usd` SimpleAggregateFunction(sum, Float64),
    `latency_ms` AggregateFunction(quantiles(0.5, 0.9, 0.99), Float32),
    `latency_ms_sum` SimpleAggregateFunction(sum, Float64),
    `latency_ms_count` SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (project_id, model, hour)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS usage_hourly_mv TO usage_hourly
AS SELECT
    project_id,
    model,
    toStartOfHour(toDateTime(timestamp, 'UTC')) AS hour,
    count() AS requests,
    countIf(event_type = 'error' OR status = 'error') AS errors,
    countIf(cache_status IN ('HIT', 'SEMANTIC_HIT')) AS cache_hits,
    sum(toUInt64(tokens_input)) AS tokens_input,
    sum(toUInt64(tokens_output)) AS tokens_output,
    sum(toUInt64(tokens_cached)) AS tokens_cached,
    sum(cost_estimate_usd) AS cost_usd,
    sum(cost_saved_usd) AS cost_saved_usd,
    quantilesState(0.5, 0.9, 0.99)(latency_ms) AS latency_ms,
    sum(toFloat64(events.latency_ms)) AS latency_ms_sum,
    count() AS latency_ms_count
FROM events
WHERE event_type IN ('prompt_call', 'error')
GROUP BY project_id, model, hour;
