"""Precipitation nowcasting data: a radar-like simulator and a loader for real gridded data."""
