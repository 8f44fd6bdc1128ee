"""Projects, keys and plans: one logical schema for SQLite, PostgreSQL and D1."""
