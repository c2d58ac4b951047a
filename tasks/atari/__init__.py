"""Atari data for the Multi-Game Decision Transformer: the ALE environment, behaviour policies, episodes."""
