"""The job store, shared by the HTTP layer (``service``) and the workers (``worker``), importing neither.

- ``db``: the tables (jobs, uploaded datasets, stage timings, idempotency keys) and the session factory
- ``jobs_repo``: every state change of a job as one conditional UPDATE (claim, lease, cancel, finish, requeue)
- ``datasets_repo``: uploaded probe sets by name
- ``storage``: content-addressed checkpoints and datasets, written while streaming with a size cap
- ``specs``: the job spec's model, normalization and the engine request it becomes
- ``checkpoint_format``: a cheap first-bytes check of an uploaded checkpoint
- ``dedupe``: the dedupe key and the one duplicate-job check
- ``broker``: the Celery app factory and the score task's name; ``dispatch``: publishing a job
- ``reaper``: requeueing jobs whose worker died (lease expired)
"""
