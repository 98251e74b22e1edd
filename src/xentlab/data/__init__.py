"""Data sources: each loader returns a DataBundle of numpy arrays with integer labels and fixed splits."""

from xentlab.data.bundle import DataBundle, DataError, limit_training, split_holdout
from xentlab.data.registry import DATA_SOURCES, load_data

__all__ = ["DATA_SOURCES", "DataBundle", "DataError", "limit_training", "load_data", "split_holdout"]
