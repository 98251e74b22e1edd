"""xentlab's Hydra sweeper (Hydra finds sweepers only in the `hydra_plugins` namespace)."""
