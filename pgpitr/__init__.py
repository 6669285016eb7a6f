"""pgpitr: point-in-time recovery for PostgreSQL."""
