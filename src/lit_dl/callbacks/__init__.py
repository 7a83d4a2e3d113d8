"""Lightning callbacks of lit_dl."""

from lit_dl.callbacks.finite_loss import FiniteLossGuard
from lit_dl.callbacks.plots import ClassificationPlots
from lit_dl.callbacks.samples import SampleGrid

__all__ = ["ClassificationPlots", "FiniteLossGuard", "SampleGrid"]
