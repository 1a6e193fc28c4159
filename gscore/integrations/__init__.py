"""Integrations with training and tracking tools (optional extras): ``gscore.integrations.lightning``
(``gscore[lightning]``) and ``gscore.integrations.mlflow`` (``gscore[mlflow]``)."""
