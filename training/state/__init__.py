"""What a run is: a model placed on a mesh with its optimizer (run_setup), the train state and its shardings,
frozen parameters, microbatching, and the jitted train and eval steps.

May import core/, models/ and partitioning/; no other room of training/.
"""
