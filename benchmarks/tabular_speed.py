"""Training throughput of lit_dl against a plain PyTorch loop on the same model and data.

Three ways to train the same TabularMLP on the same prepared churn tensors, same
batch size, optimiser and epochs, measured in one run:

1. plain PyTorch: a hand-written loop over a shuffled index, batches taken by index;
2. lit_dl: ClassificationTask + Lightning Trainer + the datamodule's batch loader
   (logger/checkpoints/progress bar off, so only the training machinery counts), with
   training-batch metrics on (the default) and off (``model.train_metrics=false``);
3. per-sample DataLoader: torch's TensorDataset + default collate, the usual
   recipe, to show what whole-batch indexing saves.

    python benchmarks/tabular_speed.py [--rows 50000] [--epochs 3] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import time
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.data import ChurnDataModule
from lit_dl.nets import TabularMLP
from lit_dl.tasks import ClassificationTask

NET = {"_target_": "lit_dl.nets.TabularMLP", "hidden_sizes": [128, 64], "dropout": 0.2, "batch_norm": True}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}


def plain_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, per_sample: bool) -> float:
    torch.manual_seed(0)
    net = TabularMLP(x.shape[1], 1, hidden_sizes=NET["hidden_sizes"], dropout=0.2, batch_norm=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True) if per_sample else None
    start = time.perf_counter()
    for _ in range(epochs):
        batches = loader if per_sample else ((x[i], y[i]) for i in torch.randperm(len(x)).split(batch_size))
        for xb, yb in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb).squeeze(-1), yb.float())
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def lit_dl_fit(datamodule: ChurnDataModule, epochs: int, train_metrics: bool = True) -> float:
    torch.manual_seed(0)
    task = ClassificationTask(
        net=NET, optimizer=OPTIMIZER, train_metrics=train_metrics, data=datamodule.data_spec()
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(task, train_dataloaders=datamodule.train_dataloader())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    datamodule = ChurnDataModule(n_rows=args.rows, batch_size=args.batch_size)
    datamodule.setup("fit")
    x, _, y = datamodule.datasets["train"].tensors
    samples = len(x) * args.epochs
    print(
        f"{len(x)} training rows x {x.shape[1]} features, batch {args.batch_size}, {args.epochs} epochs, "
        f"{torch.get_num_threads()} threads"
    )
    # Warm-up of both (allocator, kernels, Lightning's first-fit set-up), then the measured runs.
    plain_loop(x, y, 1, args.batch_size, per_sample=False)
    lit_dl_fit(datamodule, 1)
    results = {
        "plain PyTorch loop": plain_loop(x, y, args.epochs, args.batch_size, per_sample=False),
        "lit_dl (Lightning)": lit_dl_fit(datamodule, args.epochs),
        "lit_dl, no train metrics": lit_dl_fit(datamodule, args.epochs, train_metrics=False),
        "per-sample DataLoader": plain_loop(x, y, args.epochs, args.batch_size, per_sample=True),
    }
    reference = results["plain PyTorch loop"]
    print(f"{'':<26}{'seconds':>9}{'samples/s':>12}{'vs plain':>10}")
    for name, seconds in results.items():
        print(f"{name:<26}{seconds:>9.2f}{samples / seconds:>12,.0f}{seconds / reference:>9.2f}x")


if __name__ == "__main__":
    main()
