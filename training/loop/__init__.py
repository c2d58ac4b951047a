"""`train`: checks the run, sets it up, restores or initialises, and runs the step loop with its evaluations,
checkpoints, preemption, profiles and hang watch; the grouped settings it reads from gin.

May import every other room of training/, and core/, models/, partitioning/, data/ and tasks/.
"""
