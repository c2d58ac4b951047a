"""Building blocks shared by the models: norms, attention, MLPs, patching and heads."""
