"""MetNet-2: probabilistic precipitation nowcasting with dilated convolutions and lead-time conditioning.
Importing the package registers its gin configurables (metnet2.MetNet2Config, metnet2.PrecipitationForecaster)."""
from shardline.models.metnet2 import config  # noqa: F401  pylint: disable=unused-import
from shardline.models.metnet2 import forecaster  # noqa: F401  pylint: disable=unused-import
