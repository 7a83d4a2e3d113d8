"""What a ``self.log`` call costs in Lightning, with and without lit_dl's ``compat.skip_noop_result_moves``.

Lightning 2.6 moves a logged value's state to the value's device on every ``self.log`` call
(``_ResultMetric.to``): ``apply_to_collection`` over the state's attributes, deep-copying its
metadata each time. lit_dl's tasks patch that move to return at once when nothing would move.
This script measures, in one process, the two taking turns (``--rounds``, the median shown):

1. one ``self.log`` call as Lightning's result collection takes it (a step value and an epoch value);
2. a training step of a small network whose ``training_step`` logs ``--values`` values, in a
   ``Trainer`` fit on the CPU (the step's cost without logging beside them).

    python benchmarks/log_cost.py                     # about a minute on 2 cores
    python benchmarks/log_cost.py --values 5 --steps 2000
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection, _ResultMetric
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.compat import skip_noop_result_moves


class LoggingRegressor(L.LightningModule):
    """A linear regressor whose training step logs ``values`` scalars (0: none)."""

    def __init__(self, values: int) -> None:
        super().__init__()
        self.net, self.values = nn.Linear(32, 1), values

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        for k in range(self.values):
            self.log(f"train/value_{k}", loss.detach(), on_step=True, on_epoch=k == 0)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def per_log_call_us(calls: int) -> float:
    """Microseconds per ``_ResultCollection.log`` call (a step value and an epoch value in turn)."""
    collection = _ResultCollection(training=True)
    step, epoch = torch.tensor(1.5), torch.tensor(0.5)
    for _ in range(100):  # registers the keys
        collection.log("training_step", "train/loss", step, on_step=True, on_epoch=False, batch_size=64)
        collection.log("training_step", "train/acc", epoch, on_step=False, on_epoch=True, batch_size=64)
    start = time.perf_counter()
    for _ in range(calls // 2):
        collection.log("training_step", "train/loss", step, on_step=True, on_epoch=False, batch_size=64)
        collection.log("training_step", "train/acc", epoch, on_step=False, on_epoch=True, batch_size=64)
    return (time.perf_counter() - start) / (calls // 2 * 2) * 1e6


class StepClock(L.Callback):
    """The time from the end of training batch 10 to the end of the last (the fit's set-up left out)."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        batch_idx = args[-1]
        if batch_idx == 10 or batch_idx == trainer.num_training_batches - 1:
            self.marks.append(time.perf_counter())


def step_ms(values: int, steps: int) -> float:
    """Milliseconds per training step of a fit of ``LoggingRegressor(values)`` over ``steps`` batches of 64
    (steps 12 to the last)."""
    torch.manual_seed(0)
    x, y = torch.randn(steps * 64, 32), torch.randn(steps * 64)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    clock = StepClock()
    trainer.callbacks.append(clock)
    trainer.fit(LoggingRegressor(values), DataLoader(TensorDataset(x, y), batch_size=64))
    return (clock.marks[1] - clock.marks[0]) / (steps - 11) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns of stock and patched (median shown)")
    parser.add_argument("--calls", type=int, default=4000, help="self.log calls timed per round")
    parser.add_argument("--values", type=int, default=3, help="values the training step logs")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per fit")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Lightning's advice on DataLoader workers
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    skip_noop_result_moves()
    moves = {"Lightning": _ResultMetric.to.__wrapped__, "lit_dl": _ResultMetric.to}
    measures: dict[str, Callable[[], float]] = {
        "one self.log call, us": lambda: per_log_call_us(args.calls),
        f"training step logging {args.values} values, ms": lambda: step_ms(args.values, args.steps),
        "training step logging nothing, ms": lambda: step_ms(0, args.steps),
    }
    figures: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for label, measure in measures.items():
            for name, move in moves.items():
                _ResultMetric.to = move
                figures.setdefault((label, name), []).append(measure())
    _ResultMetric.to = moves["lit_dl"]
    versions = f"torch {torch.__version__}, lightning {L.__version__}"
    print(f"{versions}, {torch.get_num_threads()} threads; median of {args.rounds} rounds")
    print(f"{'':<40} {'Lightning':>10} {'lit_dl':>10} {'speed-up':>9}")
    for label in measures:
        stock = statistics.median(figures[(label, "Lightning")])
        patched = statistics.median(figures[(label, "lit_dl")])
        print(f"{label:<40} {stock:>10.2f} {patched:>10.2f} {stock / patched:>8.2f}x")


if __name__ == "__main__":
    main()
