"""Domain core shared by the API and the worker: no FastAPI, no Celery imports here."""
