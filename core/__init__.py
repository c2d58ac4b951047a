"""Neutral building blocks that every layer may use: the user-facing error type and the path layer."""
