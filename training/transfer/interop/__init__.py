"""Weights in and out of shardline in other libraries' formats (`shardline convert`, docs/transfer.md).

  safetensors_io.py   the safetensors file format: a checked reader and a streaming writer
  tensor_map.py       rules that map a group of another library's tensors onto shardline parameters, both ways
  classic_vit.py      which configurations are the classic ViT; its tensors in PyTorch's layout
  hf_vit.py           Hugging Face ViTForImageClassification: names, and its config.json
  timm_vit.py         timm's VisionTransformer state dict
  big_vision.py       big_vision's .npz checkpoints (import only)
  importer.py         a file of one of those formats -> the parameters of the configured model, checked first
  checkpoint_io.py    imported weights as a shardline checkpoint; a checkpoint's parameters one at a time
  exporter.py         a checkpoint -> safetensors in Hugging Face's or timm's naming
  serving.py          a TensorFlow SavedModel of any shardline classifier, through jax2tf

launch/convert.py is the command (`shardline convert import|export`) over these.

None of this imports torch, transformers or timm: the files are read and written with numpy, and the tests check
them against those libraries. TensorFlow is imported only by serving.py, inside its functions.
"""
