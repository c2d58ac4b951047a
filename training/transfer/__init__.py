"""Starting from someone else's weights: `train.init_from` with its parameter mapping, and distillation from a
frozen teacher.

May import core/, models/, partitioning/, and the rooms state/ and lifecycle/.
"""
