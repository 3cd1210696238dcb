"""Celery adapter: thin tasks that call the domain code in `common/`."""
