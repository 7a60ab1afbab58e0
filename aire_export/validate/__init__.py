"""Validation, independent of runtimes: parity, latency, inputs, accuracy (DESIGN §5)."""
