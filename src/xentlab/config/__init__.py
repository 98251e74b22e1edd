"""Configuration: schemas and the checks that run before anything is built."""
