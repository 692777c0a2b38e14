"""Optimizers for quantized networks."""
