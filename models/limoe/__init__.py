"""LIMoE: one sparse mixture-of-experts tower for images and text, trained contrastively (Mustafa et al., 2022).
Importing the package registers its gin configurables (limoe.LIMoEConfig, limoe.ContrastiveLIMoE,
limoe.aux_weights)."""
from shardline.models.limoe import config  # noqa: F401  pylint: disable=unused-import
from shardline.models.limoe import contrastive  # noqa: F401  pylint: disable=unused-import
from shardline.models.limoe import losses  # noqa: F401  pylint: disable=unused-import
