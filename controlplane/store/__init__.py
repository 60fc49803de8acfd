"""Storage: the schema (SQLAlchemy Core), engines and migrations."""
