"""The Multi-Game Decision Transformer: one return-conditioned transformer that plays many Atari games.
Importing the package registers its gin configurables (mgdt.MGDTConfig, mgdt.DecisionTransformerAgent)."""
from shardline.models.mgdt import agent  # noqa: F401  pylint: disable=unused-import
from shardline.models.mgdt import config  # noqa: F401  pylint: disable=unused-import
