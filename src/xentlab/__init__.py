"""xentlab: compare classification loss set-ups, tracked in MLflow and driven by Hydra configs."""

__version__ = "0.1.0"
