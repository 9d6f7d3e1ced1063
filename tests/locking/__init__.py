"""Tests of `locking`: file locks and the shared state file, with real processes."""
