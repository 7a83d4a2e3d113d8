"""A plain PyTorch loop against lit_dl's ``text_lstm``: validation bits per character in a time budget.

    python benchmarks/text_lstm.py                   # plain loop 5 min, then text_lstm (at most 9 min)
    python benchmarks/text_lstm.py --minutes 0.5 --lit-minutes 0.5   # a quick check that both run

Both sides read the same text (the embedded CPython documentation unless ``--path``), the
same ``train | val | test`` split and the same training-span vocabulary (from
:class:`~lit_dl.data.text.CharTextDataModule`), and are scored the same way: validation
bits per character over 16 parallel streams with the recurrent state carried along.

* plain: what one writes by hand: random ``(B, T + 1)`` windows of the training text,
  a fresh zero state for each batch, a 2-layer 256-unit LSTM, Adam, gradient clipping.
  Its budget counts training steps only (validation every ``--eval-every`` seconds is
  not counted); it reports its best validation bpc.
* lit_dl: ``lit-dl train experiment=text_lstm trainer.max_time=...`` in a subprocess,
  whose time limit counts everything in ``fit`` (its validation too); it reports the
  ``val/bpc`` of the best checkpoint from ``metrics.json`` and the wall time of the whole
  command (start-up, final validation and test included).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_dl.data.text import CharTextDataModule


class PlainCharLSTM(nn.Module):
    """Embedding, 2-layer LSTM, linear head: ``(B, T)`` -> ``(B, T, V)``, written out by hand."""

    def __init__(self, vocab_size: int, embedding_dim: int = 64, hidden_size: int = 256) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: Tensor, state: tuple[Tensor, Tensor] | None = None):
        outputs, state = self.lstm(self.embedding(tokens), state)
        return self.head(outputs), state


def get_batch(
    tokens: Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``seq_len + 1`` characters: inputs and next-character targets."""
    starts = torch.randint(len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def validation_bpc(model: nn.Module, datamodule: CharTextDataModule) -> float:
    """Bits per character of the validation span, read as lit_dl reads it (streams, state carried)."""
    model.eval()
    total, count, state = 0.0, 0, None
    for inputs, targets in datamodule.val_dataloader():
        logits, state = model(inputs, state)
        total += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    model.train()
    return total / count / math.log(2)


def run_plain(datamodule: CharTextDataModule, args: argparse.Namespace) -> dict[str, object]:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    train = datamodule.datasets["train"]
    model = PlainCharLSTM(len(datamodule.vocabulary) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    budget, trained, steps, next_eval = args.minutes * 60, 0.0, 0, args.eval_every
    curve: list[tuple[float, int, float]] = []
    while trained < budget:
        start = time.perf_counter()
        inputs, targets = get_batch(train, args.batch_size, args.seq_len, generator)
        logits, _ = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        trained += time.perf_counter() - start
        steps += 1
        if trained >= min(next_eval, budget):
            curve.append((trained, steps, validation_bpc(model, datamodule)))
            print(
                f"  plain  {trained / 60:5.2f} min  step {steps:6d}  val bpc {curve[-1][2]:.3f}", flush=True
            )
            next_eval += args.eval_every
    return {
        "val_bpc": min(bpc for _, _, bpc in curve),
        "minutes": trained / 60,
        "steps": steps,
        "curve": curve,
    }


def run_lit(args: argparse.Namespace, run_dir: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "lit_dl.cli", "train", "experiment=text_lstm", f"seed={args.seed}"]
    command += ["callbacks.progress_bar=null", "callbacks.model_summary=null", f"hydra.run.dir={run_dir}"]
    if args.path:
        command.append(f"data.path={Path(args.path).resolve()}")
    if args.lit_minutes is not None:
        seconds = round(args.lit_minutes * 60)
        command.append(f"trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}")
    command += args.lit_overrides
    print("  $ " + " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lit-dl train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    # The last val/bpc row is `train` re-validating the best checkpoint: keep the epochs that trained.
    trained = {row["epoch"] for row in rows if row.get("train/bpc")}
    curve = [
        (int(row["epoch"]), int(row["step"]), float(row["val/bpc"]))
        for row in rows
        if row.get("val/bpc") and row["epoch"] in trained
    ]
    for epoch, step, bpc in curve:
        print(f"  lit_dl epoch {epoch:3d}  step {step:6d}  val bpc {bpc:.3f}", flush=True)
    return {
        "val_bpc": metrics["val/bpc"],
        "test_bpc": metrics.get("test/bpc"),
        "wall_minutes": wall / 60,
        "curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of the plain loop")
    parser.add_argument(
        "--lit-minutes",
        type=float,
        default=None,
        help="trainer.max_time of text_lstm (default: the experiment's)",
    )
    parser.add_argument("--path", default=None, help="a text file (default: the embedded CPython docs)")
    parser.add_argument("--batch-size", type=int, default=50, help="plain loop (char-rnn's default)")
    parser.add_argument("--seq-len", type=int, default=50, help="plain loop (char-rnn's default)")
    parser.add_argument("--lr", type=float, default=2e-3, help="plain loop")
    parser.add_argument("--clip", type=float, default=5.0, help="plain loop: gradient norm clip")
    parser.add_argument(
        "--eval-every", type=float, default=30.0, help="plain loop: seconds of training between evals"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--skip-lit", action="store_true")
    parser.add_argument("lit_overrides", nargs="*", help="extra key=value overrides for lit-dl train")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} threads")

    datamodule = CharTextDataModule(path=args.path)
    datamodule.setup("fit")
    sizes = {name: len(tokens) for name, tokens in datamodule.datasets.items()}
    print(f"text: {sizes} characters, vocabulary {len(datamodule.vocabulary)} + unknown")

    results: dict[str, dict[str, object]] = {}
    if not args.skip_plain:
        print(
            f"plain PyTorch loop: batch {args.batch_size} x {args.seq_len}, lr {args.lr}, {args.minutes} min"
        )
        results["plain"] = run_plain(datamodule, args)
    if not args.skip_lit:
        print("lit_dl experiment=text_lstm")
        with tempfile.TemporaryDirectory() as tmp:
            results["lit_dl"] = run_lit(args, Path(tmp) / "run")

    print()
    print(f"{'':24s}{'val bpc':>9s}{'minutes':>10s}")
    if "plain" in results:
        plain = results["plain"]
        print(f"{'plain PyTorch loop':24s}{plain['val_bpc']:9.3f}{plain['minutes']:10.2f}  (training time)")
    if "lit_dl" in results:
        lit = results["lit_dl"]
        print(f"{'lit_dl text_lstm':24s}{lit['val_bpc']:9.3f}{lit['wall_minutes']:10.2f}  (whole command)")


if __name__ == "__main__":
    main()
