"""MLflow: the store and its tag names, run lifecycle, the outbox, resume of interrupted jobs."""
