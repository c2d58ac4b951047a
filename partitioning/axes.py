"""The logical-axis vocabulary: every logical axis that a model may name, defined once.

Models annotate parameters and activations with these names only. Rule sets (`rules.py`) map them to mesh
axes, so the same model runs data-parallel, fully sharded, tensor-parallel, expert-parallel or spatially
partitioned without a change to its code.
"""

# Activations and data.
BATCH = "batch"
LENGTH = "length"  # tokens of a sequence (patches, text, timesteps x tokens).
HEIGHT = "height"
WIDTH = "width"
TIME = "time"  # input time steps (MetNet-2).

# Parameters (and the activations that share their dimensions).
EMBED = "embed"  # the residual-stream width.
MLP = "mlp"  # the hidden width of feed-forward layers.
HEADS = "heads"
KV = "kv"  # the per-head width of queries, keys and values.
VOCAB = "vocab"
CLASSES = "classes"
PATCH = "patch"  # flattened pixels of one patch, the input of a patch embedding.
CHANNELS = "channels"  # convolution channels.
CONV_IN = "conv_in"  # input channels of a convolution kernel.
KERNEL = "kernel"  # spatial taps of a convolution kernel.
EXPERT = "expert"
POSITION = "position"  # learned position-embedding tables.
NORM = "norm"  # LayerNorm scales and other vectors over `embed` that are never worth sharding.

ALL = frozenset({
    BATCH, LENGTH, HEIGHT, WIDTH, TIME, EMBED, MLP, HEADS, KV, VOCAB, CLASSES, PATCH, CHANNELS, CONV_IN,
    KERNEL, EXPERT, POSITION, NORM,
})

# Mesh axes. A mesh may use any subset; `mesh.py` always builds all four, with size 1 where unused.
DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
TENSOR_AXIS = "tensor"
EXPERT_AXIS = "expert"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, TENSOR_AXIS, EXPERT_AXIS)

# Stacked layers of a scanned encoder; never sharded.
LAYERS = "layers"
ALL = ALL | {LAYERS}
