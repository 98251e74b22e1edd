"""The library: label pipeline, losses, metrics, probabilities, models, weighting, calibration. No Hydra, no MLflow."""
