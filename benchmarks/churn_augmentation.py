"""Does oversampling churners with a conditional generator help the churn MLP? Test recall, F1, AUROC.

1. Trains a generator of the embedded churn table (``experiment=churn_ctgan``, or ``--model tvae``)
   on the training split of ``data=churn`` (same rows: same fractions, seed and stratification).
2. Samples as many churners (``condition="churn=Yes"``) as it takes to balance the training split.
3. Trains the churn MLP (``experiment=churn_mlp``) on the real training rows, on the real rows plus
   the synthetic churners, and (for reference) with ``model.class_weights=balanced``; validation and
   test rows are real and the same in every run. Prints the test metrics per seed and their mean.

    python benchmarks/churn_augmentation.py [--model ctgan|tvae] [--seeds 42,1,2] [--runs DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lit_dl.cli import main as cli
from lit_dl.data.churn_datamodule import ChurnDataModule
from lit_dl.data.tables import TableRows, read_table
from lit_dl.verbs.common import restore_from_checkpoint

METRICS = ("test/recall", "test/precision", "test/f1", "test/auroc")


class AugmentedChurnDataModule(ChurnDataModule):
    """The churn data with extra (synthetic) rows added to the training split only."""

    def __init__(self, synthetic_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.synthetic_path = synthetic_path

    def _split(self, frame: pd.DataFrame, stratify: pd.Series | None) -> dict[str, TableRows]:
        splits = super()._split(frame, stratify)
        if self.synthetic_path:
            extra = read_table(self.synthetic_path, na_values=self.na_values)
            splits["train"] = TableRows(pd.concat([splits["train"].take(), extra], ignore_index=True))
        return splits


def train_generator(model: str, run_dir: Path) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "lit_dl.cli", "train", f"experiment=churn_{model}",
               "callbacks.progress_bar=null", f"hydra.run.dir={run_dir}"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def train_mlp(run_dir: Path, seed: int, *overrides: str) -> dict[str, float]:
    cli(["train", "experiment=churn_mlp", f"seed={seed}", "callbacks.progress_bar=null",
         "callbacks.model_summary=null", f"hydra.run.dir={run_dir}", *overrides])  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {m: metrics[m] for m in METRICS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ctgan", choices=["ctgan", "tvae"])
    parser.add_argument("--seeds", default="42,1,2")
    parser.add_argument("--runs", default="logs/benchmarks/churn_augmentation")
    args = parser.parse_args(argv)
    root = Path(args.runs).resolve()
    # One folder per invocation (a run folder holds one run); the generator is trained once and reused.
    runs = root / time.strftime("%Y-%m-%d_%H-%M-%S")
    generator_dir = root / f"generator_{args.model}"
    if not (generator_dir / "checkpoints" / "best.ckpt").is_file():
        print(f"generator: {train_generator(args.model, generator_dir) / 60:.1f} min", flush=True)
    model, datamodule = restore_from_checkpoint(generator_dir / "checkpoints" / "best.ckpt")
    datamodule.setup()
    reference = ChurnDataModule(val_fraction=0.15, test_fraction=0.15, split_seed=42)
    reference.setup()
    # The generator saw exactly the MLP's training rows: no validation or test customer leaks in.
    train = datamodule.frames["train"]
    counts = train["churn"].value_counts()
    needed = int(counts["No"] - counts["Yes"])
    start = time.perf_counter()
    churners = model.sample(n=needed, condition="churn=Yes", generator=torch.Generator().manual_seed(0))
    print(f"sampled {needed} churners in {time.perf_counter() - start:.1f} s "
          f"(training split: {counts['Yes']} churners, {counts['No']} others)")  # fmt: skip
    synthetic_path = runs / "synthetic_churners.csv"
    churners.to_csv(synthetic_path, index=False)
    assert len(reference.datasets["train"]) == len(train), "the generator's split differs from data=churn's"

    results: dict[str, list[dict[str, float]]] = {
        "real": [],
        "real + synthetic churners": [],
        "class weights": [],
    }
    target = f"{__name__}.AugmentedChurnDataModule"
    for seed in [int(s) for s in args.seeds.split(",")]:
        results["real"].append(train_mlp(runs / f"real_{seed}", seed))
        results["real + synthetic churners"].append(
            train_mlp(
                runs / f"augmented_{seed}",
                seed,
                f"data._target_={target}",
                f"+data.synthetic_path={synthetic_path}",
            )
        )
        results["class weights"].append(
            train_mlp(runs / f"weighted_{seed}", seed, "model.class_weights=balanced")
        )

    print(f"\nchurn MLP, test split (real rows), mean over seeds {args.seeds}; generator: {args.model}")
    print("| training rows | " + " | ".join(m.removeprefix("test/") for m in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    means = {}
    for name, rows in results.items():
        means[name] = {m: sum(r[m] for r in rows) / len(rows) for m in METRICS}
        print(f"| {name} | " + " | ".join(f"{means[name][m]:.4f}" for m in METRICS) + " |")
    change = {m: means["real + synthetic churners"][m] - means["real"][m] for m in METRICS}
    print(
        "change from augmentation: "
        + ", ".join(f"{m.removeprefix('test/')} {v:+.4f}" for m, v in change.items())
    )
    (runs / "summary.json").write_text(
        json.dumps({"per_seed": results, "mean": means, "change": change}, indent=2)
    )


if __name__ == "__main__":
    main()
