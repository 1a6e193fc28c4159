"""Alembic migrations of the job store, shipped inside the package (``script_location = jobstore:migrations``).

Run them with :func:`gscore.jobstore.db.prepare_database` (under a lock), never by hand on a serving database.
"""
