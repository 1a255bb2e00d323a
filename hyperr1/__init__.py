"""hyperr1: hyperbolic representations for R1-style reasoning models."""

__version__ = "0.1.0"
