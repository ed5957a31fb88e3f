"""Schema migrations: backend/migrations/versions/, applied by backend.migrations.runner."""
