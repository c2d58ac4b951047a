"""Meshes, logical axes, rule sets, shardings and parallel linear operations."""
