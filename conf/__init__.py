"""xentlab's configs, installed as the package `xentlab.conf` (Hydra's `pkg://xentlab.conf`); see setup.py."""
