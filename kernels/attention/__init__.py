"""Flash attention: Pallas kernels for GPU (Triton) and TPU (Mosaic), a reference, and the api."""
