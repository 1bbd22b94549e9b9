"""Celery tasks: thin adapters from the queue to services."""
