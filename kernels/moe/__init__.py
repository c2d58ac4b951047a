"""The expert matmul of sort-by-expert MoE dispatch: a grouped matmul that skips unused capacity."""
