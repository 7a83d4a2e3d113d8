"""Lightning callbacks of lit_dl."""

from lit_dl.callbacks.finite_loss import FiniteLossGuard
from lit_dl.callbacks.plots import ClassificationPlots
from lit_dl.callbacks.samples import SampleGrid
from lit_dl.callbacks.table_fidelity import TableFidelity

__all__ = ["ClassificationPlots", "FiniteLossGuard", "SampleGrid", "TableFidelity"]
