"""lit_dl: deep-learning training on PyTorch Lightning, configured with Hydra."""

__version__ = "0.1.0"
