"""The train/eval loop, optimizers, checkpoints, metrics and summaries."""
