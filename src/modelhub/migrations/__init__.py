"""Alembic migrations of the platform's database (``modelhub.platform.db.migrate`` runs them)."""
