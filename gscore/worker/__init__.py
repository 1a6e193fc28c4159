"""Celery workers that run scoring jobs from the job table."""
