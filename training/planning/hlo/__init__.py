"""Reading compiled HLO text: the parser (text), matmul FLOPs with loops multiplied out (flops), and which
matmuls overlap collectives in a schedule (overlap)."""
