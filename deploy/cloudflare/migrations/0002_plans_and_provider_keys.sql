-- Migration 0002 plans_and_provider_keys (d1).
-- Generated from watchllm/metadata/schema.py: edit that, then `make migrations`.
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    limits TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS plans_name ON plans (name);
ALTER TABLE api_keys ADD COLUMN limits TEXT;
CREATE TABLE IF NOT EXISTS provider_keys (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    key_id TEXT NOT NULL,
    hint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS provider_keys_project ON provider_keys (project_id, provider);
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);
INSERT INTO schema_migrations (version, name, applied_at) VALUES (2, 'plans_and_provider_keys', CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) ON CONFLICT (version) DO NOTHING;
