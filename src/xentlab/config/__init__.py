"""Configuration: schemas, closed choices, and the checks that run before anything is built."""
