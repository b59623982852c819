"""Evaluation: frozen-embedding probes on the fixed probe sets."""
