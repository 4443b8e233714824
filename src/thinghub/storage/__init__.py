"""Storage adapters: SQLite (embedded default) and PostgreSQL (scale-out), one schema."""
