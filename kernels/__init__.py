"""Pallas kernels: one folder per kernel, each with its backends, a reference and an api."""
