"""Training, evaluation and planning, in rooms by job. Imports between rooms go one way, down this list:

  loop/        `train`: the step loop and the settings it runs with        may import every room below
  planning/    runs planned for hardware not at hand; HLO reading, FLOPs    state, transfer
  evaluation/  evaluators, `shardline eval`, few-shot, `infer`, Atari play  state, lifecycle
  transfer/    init_from, parameter mapping, distillation                   state, lifecycle
  state/       the run's set-up, train state, optimizer and step functions  (no other room)
  lifecycle/   checkpoints, storage, preemption, hangs, goodput, profiles,  (no other room)
               summaries

Every room may import core/, models/ and partitioning/; evaluation/ and loop/ also read data through data/ and
tasks/. tests/test_import_directions.py enforces this.
"""
