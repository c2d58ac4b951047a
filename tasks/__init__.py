"""seqio tasks, data generators and simulators, loaders for users' real data, and evaluation metrics.

`splits` maps a task's name to its source and opens splits; it imports neither TensorFlow nor seqio, so a run on
synthetic batches (or a direct source) needs neither. The task modules import TensorFlow through `tensorflow_setup`,
which keeps it quiet and off the accelerators. A gin file names the task module it uses (`import
shardline.tasks.digits`), which registers its seqio tasks.
"""
