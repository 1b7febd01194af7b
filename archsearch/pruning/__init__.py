"""Attach gates to a model by granularity, harden it into a smaller plain model, count FLOPs."""
