"""The run's lifecycle around the step: checkpoints (orbax, with the S3 adapter), storage outages, preemption,
the hang watchdog, goodput, XProf profiles, and metrics summaries.

May import core/ and partitioning/; no other room of training/ (every room may import this one).
"""
