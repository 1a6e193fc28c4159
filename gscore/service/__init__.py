"""The gscore HTTP service (FastAPI): jobs, collections, datasets, catalog, health and metrics."""
