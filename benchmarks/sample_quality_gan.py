"""Does a GAN's sample quality improve as it trains? FID per epoch against the real-versus-real floor.

Trains an image GAN experiment with the sample-quality callback (FID, KID, precision and
recall in the feature space of a classifier of the same data set, trained once into
``~/.cache/lit_dl/feature_classifiers/`` when missing), then prints the figures of every epoch,
the floor (the same figures between two disjoint sets of real images of the same
sizes) and the test figures of the best checkpoint, and says whether the final FID
ended well below (under half) that of the first epoch.

    python benchmarks/sample_quality_gan.py --experiment fashion_gan \
        --out runs/fashion_gan data.root=/path/to/fashion_mnist trainer.max_epochs=15
    python benchmarks/sample_quality_gan.py --experiment digits_gan --out /tmp/digits_gan \
        trainer.max_epochs=5                                   # a CPU check in about a minute
    python benchmarks/sample_quality_gan.py --report-only --out runs/fashion_gan   # summarise a finished run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

FIGURES = ("fid", "kid", "precision", "recall")


def train(experiment: str, out: Path, overrides: list[str]) -> None:
    command = [
        sys.executable,
        "-m",
        "lit_dl.cli",
        "train",
        f"experiment={experiment}",
        f"hydra.run.dir={out}",
        *overrides,
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def report(out: Path) -> bool:
    """Print the run's figures; True when the last epoch's FID is under half the first epoch's."""
    saved = json.loads((out / "sample_quality.json").read_text())
    epochs = sorted(saved["val"], key=int)
    if not epochs:
        raise SystemExit(f"no validation figures in {out / 'sample_quality.json'}")
    print(f"\n| epoch | {' | '.join(FIGURES)} |\n|---|{'---|' * len(FIGURES)}")
    for epoch in epochs:
        figures = saved["val"][epoch]
        print(f"| {epoch} | " + " | ".join(f"{figures[name]:.4g}" for name in FIGURES) + " |")
    for stage in ("val", "test"):
        floor = saved["floor"].get(stage)
        if floor:
            text = ", ".join(f"{name} {floor[name]:.4g}" for name in FIGURES)
            print(f"\nreal-versus-real floor ({stage}): {text}")
    if saved.get("test"):
        test = saved["test"]
        print("test (best checkpoint): " + ", ".join(f"{name} {test[name]:.4g}" for name in FIGURES))
    first, last = saved["val"][epochs[0]]["fid"], saved["val"][epochs[-1]]["fid"]
    falls = last < 0.5 * first
    verdict = "falls well below the first epoch" if falls else "NOT under half the first epoch's"
    floor = saved["floor"]["val"]["fid"]
    change = f"epoch {epochs[0]} {first:.4g} -> epoch {epochs[-1]} {last:.4g} (floor {floor:.4g})"
    print(f"\nvalidation FID: {change}: {verdict}")
    return falls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="fashion_gan")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--report-only", action="store_true", help="summarise a finished run")
    args, overrides = parser.parse_known_args()
    if not args.report_only:
        train(args.experiment, args.out, overrides)
    sys.exit(0 if report(args.out) else 1)


if __name__ == "__main__":
    main()
