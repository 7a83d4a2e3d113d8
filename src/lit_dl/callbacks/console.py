"""What a run prints: a compact model summary, and a progress bar that suits the terminal.

Lightning's own ``RichModelSummary`` lists every sub-module, metric collections included, a
FLOPs column that reads 0 unless the model has an ``example_input_array``, and five lines of
totals; its ``RichProgressBar`` redraws in place, which, written to a file or a CI log (no
terminal), breaks the metrics into fragments. These two keep Lightning's behaviour and cut
the noise.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_human_readable_count

from lit_dl.utils import format_number

log = logging.getLogger("lit_dl")


class ModelSummary(RichModelSummary):
    """Lightning's ``RichModelSummary`` (same arguments), without the rows of sub-modules that
    hold no weights (metrics, losses, running means), without a FLOPs column that Lightning
    could not count, and with one line of totals."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        shown = ["Name", "Type", "Params"] + [
            c for c in ("Params per Device", "In sizes", "Out sizes") if c in columns
        ]
        if total_flops > 0 and "FLOPs" in columns:
            shown.append("FLOPs")
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for name in shown:
            table.add_column(name, justify="left" if name in ("Name", "Type") else "right")
        for i in range(len(columns["Name"])):
            if columns["Params"][i].strip() == "0":  # metrics, running means, losses: no weights
                continue
            table.add_row(*(columns[name][i] for name in shown))
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"{get_human_readable_count(int(trainable_parameters))} trainable parameters"
            + (f", {get_human_readable_count(int(frozen))} frozen" if frozen else "")
            + f" ({model_size:,.2f} MB)"
        )


# RichProgressBar's hooks of every batch (each returns at once when the bar is disabled).
BAR_BATCH_HOOKS = tuple(
    f"on_{stage}_batch_{moment}"
    for stage in ("train", "validation", "test", "predict")
    for moment in ("start", "end")
)


class ProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar`` (same arguments) in a terminal; elsewhere (a file, a CI
    log, a batch job) one line per epoch instead: ``epoch 3/30  train/loss 0.512  val/loss
    0.461 ... (2.1 s)``, through logging, so it also lands in the run's log file."""

    def __init__(self, *args: Any, terminal: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._epoch_start = 0.0
        if not self.terminal:
            self.disable()
            # Disabled, the bar's batch hooks only find that it is: Lightning skips a hook that is None
            # (see lit_dl.compat.skip_noop_batch_hooks), so none runs on every batch for nothing.
            for name in BAR_BATCH_HOOKS:
                setattr(self, name, None)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()
        if self.terminal:
            super().on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.terminal:
            super().on_train_epoch_end(trainer, pl_module)
            return
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {
            name.removesuffix("_epoch"): value
            for name, value in trainer.callback_metrics.items()
            if not name.endswith("_step") and name.startswith(("train/", "val/"))
        }
        shown = "  ".join(f"{name} {_number(value)}" for name, value in sorted(metrics.items()))
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        seconds = time.monotonic() - self._epoch_start
        log.info("epoch %d%s  %s  (%.1f s)", trainer.current_epoch + 1, total, shown, seconds)


def _number(value: Any) -> str:
    try:
        return format_number(float(value), ".4g")
    except (TypeError, ValueError):
        return str(value)
