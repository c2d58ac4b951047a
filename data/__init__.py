"""The input layer: random-access sources over records on disk, a global step-indexed order, seeded
augmentation, grain worker processes and device prefetch.

Nothing here imports TensorFlow or seqio at module level, so grain's worker processes start light; only
`prepare` and `sources` (which resolve seqio tasks) reach into shardline.tasks.
"""
