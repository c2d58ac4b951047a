"""The Multi-Game Decision Transformer: one return-conditioned transformer that plays many Atari games."""
