"""Benchmarks (`make bench`): outside the installed package."""
