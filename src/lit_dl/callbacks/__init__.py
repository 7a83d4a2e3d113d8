"""Lightning callbacks of lit_dl."""

from lit_dl.callbacks.finite_loss import FiniteLossGuard

__all__ = ["FiniteLossGuard"]
