"""Anomaly AUROC of the digits VAE with each class held out in turn: raw likelihood against corrected.

For every digit class ``c`` trains ``experiment=digits_vae data.exclude_classes=[c]`` (the VAE never
sees a ``c``; the test split keeps them) and prints one table: the AUROC with which the negative
ELBO (``test/anomaly_auroc``), the importance-sampled NLL (``test/anomaly_auroc_nll``) and the
corrected score (``test/anomaly_auroc_corrected``: the likelihood under the training images' codes
minus the weighted cost of the image under a local pixel model, see ``lit_dl.tasks.vae.VAETask``)
tell the held-out class from the other nine, with the fitted complexity weight and the run time.
Likelihoods favour simple images: a held-out ``1`` scores as more normal than the digits the model
was trained on.

    python benchmarks/digits_anomaly.py [--classes 0,1,...] [--runs DIR] [--seed 42] [key=value ...]

Each run trains longer than the experiment's default (:data:`TRAINING`). Extra ``key=value``
overrides go to every run after those (e.g. ``trainer.max_epochs=20`` for a quick check;
``model.reference_images=0`` for the earlier score, the NLL corrected).

Figures (seeds 42, 0 and 1: corrected mean 0.857, 0.869, 0.860, lowest 0.732-0.759; issue 16 asked
for at least 0.85 and none below 0.70) and the scores measured on the way there:
docs/generative-images.md, "Anomalies".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Longer training than experiment=digits_vae's default (at most 60 epochs, the learning rate halved on
# every plateau of the validation loss), which keeps the default run short: halving on the noisy
# validation loss of 130 images froze the VAE at about 24 nats, too blurry a likelihood to tell a
# held-out digit from the rest. A constant rate and up to 200 epochs (18 batches each) end at 22.8-23.6.
TRAINING = ["model.scheduler=null", "trainer.max_epochs=200", "callbacks.early_stopping.patience=40"]

FIGURES = {
    "raw (negative ELBO)": "test/anomaly_auroc",
    "raw (NLL)": "test/anomaly_auroc_nll",
    "corrected": "test/anomaly_auroc_corrected",
}


def run(digit: int, runs: Path, seed: int, overrides: list[str]) -> dict[str, float]:
    """Train and test the VAE without ``digit``; its test metrics and run time (seconds)."""
    run_dir = runs / f"without_{digit}"
    command = [
        sys.executable,
        "-m",
        "lit_dl.cli",
        "train",
        "experiment=digits_vae",
        f"data.exclude_classes=[{digit}]",
        f"seed={seed}",
        "callbacks.progress_bar=null",
        "callbacks.samples=null",  # sample grids every epoch: not what is measured here
        f"hydra.run.dir={run_dir}",
        *TRAINING,
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**metrics, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", default=",".join(map(str, range(10))), help="digits to hold out")
    parser.add_argument("--runs", default="logs/benchmarks/digits_anomaly", help="run folders go here")
    parser.add_argument("--seed", type=int, default=42)
    args, overrides = parser.parse_known_args(argv)
    # One folder per invocation: a run folder holds one run (a second run into it is refused).
    runs = Path(args.runs) / time.strftime("%Y-%m-%d_%H-%M-%S")
    results = {}
    for digit in (int(c) for c in args.classes.split(",")):
        results[digit] = run(digit, runs, args.seed, overrides)
        print(f"held out {digit}: {results[digit]['seconds']:.0f} s", flush=True)

    print(f"\n| held-out digit | {' | '.join(FIGURES)} | complexity weight | test NLL (nats) | run time |")
    print(f"|---|{'---|' * len(FIGURES)}---|---|---|")
    for digit, metrics in results.items():
        figures = " | ".join(f"{metrics.get(key, float('nan')):.3f}" for key in FIGURES.values())
        print(
            f"| {digit} | {figures} | {metrics.get('test/complexity_weight', float('nan')):.3f} | "
            f"{metrics.get('test/nll', float('nan')):.2f} | {metrics['seconds']:.0f} s |"
        )
    for what, reduce in (("mean", statistics.fmean), ("lowest", min)):
        values = {key: [m.get(key, float("nan")) for m in results.values()] for key in FIGURES.values()}
        figures = " | ".join(f"**{reduce(v):.3f}**" for v in values.values())
        print(f"| {what} | {figures} | | | |")
    (runs / "summary.json").write_text(json.dumps({str(d): m for d, m in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
