"""LIMoE: one sparse mixture-of-experts tower for images and text, trained contrastively (Mustafa et al., 2022)."""
