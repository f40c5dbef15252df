"""Temporal workflows. Workflow code is deterministic: no I/O, no wall clock, no randomness."""
