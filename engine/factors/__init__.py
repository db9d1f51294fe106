"""Microarchitecture workspace (seed 002): CNN patch features, NMF factors, selection, clusters.

The path, one module per step:

- ``io``: grayscale images (PNG, JPEG, TIFF, ``.npy``, memory-mapped when possible) and
  integer label maps (0 = unlabelled); ``synth``: a texture mosaic with an exact region map
  and a latent-like matrix for NMF tests.
- ``patches``: patches around pixels (mirrored borders) and the spatial-block
  training/validation split with a gap.
- ``cnn``: the paper's patch classifier, its training, evaluation and model files (with the
  preprocessing definition, checked on use).
- ``dense``: the 64-d latent at every pixel or stride, fully convolutionally and exactly.
- ``nmf``: HALS NMF in torch (CPU/CUDA), chunked for millions of rows.
- ``selection``: the greedy coverage–leakage choice of factors for labelled regions.
- ``clusters``: Gaussian-mixture clusters of factor codes inside one region.
"""


def resolve_device(device=None):
    """A torch.device: one given as such is kept, anything else goes through engine.device.select_device."""
    import torch

    from engine.device import select_device

    if isinstance(device, torch.device):
        return device
    return select_device(device)
