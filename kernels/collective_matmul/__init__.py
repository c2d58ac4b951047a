"""All-gather-matmul as a Pallas TPU kernel: remote DMAs round the ring overlap a pipelined matmul."""
