"""Entry points (train, eval, infer, plan) and launchers."""
