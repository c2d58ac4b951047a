"""Evaluation: the named evaluators (split metrics, few-shot), `shardline eval`, `shardline infer`, and MGDT's
play in the Atari emulator.

Atari play lives here, not in tasks/ or models/: it drives a model on a task's emulator, and only training/ may
import both (tasks/ and models/ never import each other).

May import core/, models/, partitioning/, data/, tasks/, and the rooms state/ and lifecycle/.
"""
