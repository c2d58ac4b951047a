"""Imports every module that registers gin configurables or seqio tasks, so gin files can name them."""
import importlib

CONFIGURABLE_MODULES = (
    "shardline.partitioning.mesh",
    "shardline.partitioning.rules",
    "shardline.models.vit22b.config",
    "shardline.models.vit22b.classifier",
    "shardline.models.limoe.config",
    "shardline.models.limoe.losses",
    "shardline.models.limoe.contrastive",
    "shardline.models.metnet2.config",
    "shardline.models.metnet2.forecaster",
    "shardline.models.mgdt.config",
    "shardline.models.mgdt.agent",
    "shardline.tasks.registry",
    "shardline.tasks.digits",
    "shardline.tasks.tfds_image",
    "shardline.tasks.tfds_image_text",
    "shardline.tasks.precipitation.simulated_task",
    "shardline.tasks.precipitation.zarr_source",
    "shardline.tasks.atari.task",
    "shardline.tasks.atari.play",
    "shardline.training.optimizer",
    "shardline.training.trainer",
    "shardline.training.evaluate",
    "shardline.training.infer",
    "shardline.launch.runtime",
    "shardline.launch.plan",
)


def import_all() -> None:
  """Imports the configurable modules (idempotent)."""
  for name in CONFIGURABLE_MODULES:
    importlib.import_module(name)
