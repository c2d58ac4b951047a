"""ViT-22B: parallel layers, QK-norm, no QKV or LayerNorm biases (Dehghani et al., 2023). Importing the package
registers its gin configurables (vit22b.ViT22BConfig, vit22b.ImageClassifier)."""
from shardline.models.vit22b import classifier  # noqa: F401  pylint: disable=unused-import
from shardline.models.vit22b import config  # noqa: F401  pylint: disable=unused-import
