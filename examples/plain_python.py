"""lit_dl from plain Python, without Hydra: a datamodule, a network, a task and a Lightning Trainer.

python examples/plain_python.py --epochs 5
"""

from __future__ import annotations

import argparse

import lightning as L

from lit_dl.data import ChurnDataModule
from lit_dl.tasks import ClassificationTask


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rows", type=int, default=10000, help="customers in the embedded churn table")
    parser.add_argument("--output", default="runs/plain_python", help="checkpoints and logs")
    args = parser.parse_args(argv)

    L.seed_everything(0)
    # Data first: the datamodule prepares the table and describes it (a DataSpec).
    datamodule = ChurnDataModule(n_rows=args.rows, batch_size=256)
    datamodule.setup("fit")
    # The network and optimiser are config entries (plain dicts), so a checkpoint rebuilds the task.
    task = ClassificationTask(
        net={"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [64, 32], "dropout": 0.3},
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
        data=datamodule.data_spec(),
    )
    trainer = L.Trainer(
        max_epochs=args.epochs,
        default_root_dir=args.output,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=datamodule)
    (metrics,) = trainer.test(task, datamodule=datamodule, verbose=False)
    print(", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())))
    return metrics


if __name__ == "__main__":
    main()
