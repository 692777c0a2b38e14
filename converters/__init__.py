"""Keras -> Larq Compute Engine TFLite conversion (installed as ``tfquant.converters``)."""
