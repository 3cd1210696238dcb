"""Alembic's script directory for the prediction log's schema (common/prediction_log/
migrate.py runs it; there is no alembic.ini: the engine comes from the settings)."""
