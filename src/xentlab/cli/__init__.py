"""Entry points: xentlab-train (and its sweep callback), -compare, -generate, -sync, smoke-gpu."""
