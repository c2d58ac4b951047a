"""ViT-22B: parallel layers, QK-norm, no QKV or LayerNorm biases (Dehghani et al., 2023)."""
