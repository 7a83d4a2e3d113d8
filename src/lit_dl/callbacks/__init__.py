"""Lightning callbacks of lit_dl."""

from lit_dl.callbacks.finite_loss import FiniteLossGuard
from lit_dl.callbacks.plots import ClassificationPlots

__all__ = ["ClassificationPlots", "FiniteLossGuard"]
