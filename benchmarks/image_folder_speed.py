"""Reading a folder of images: held in memory against read from disk by DataLoader workers.

Writes ``--images`` generated PNG files (``--size`` pixels square, RGB, ``--classes`` sub-folders)
into a temporary folder, then for each way of reading (``data.in_memory=true``; ``false`` with
0 workers and with ``--workers``) sets up ``data=image_folder`` in a fresh process and prints the
setup time (memory: decoding every image; disk: one checking pass over the files in workers, the
normalisation fitted from it) and the images per second of two training epochs of batches (the
second is what the epochs of a long run cost: the workers persist), with the peak resident memory.

    python benchmarks/image_folder_speed.py [--images 20000] [--size 64] [--workers 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_folder(root: Path, images: int, size: int, classes: int, seed: int = 0) -> None:
    """Noisy images with a class-dependent mean colour, PNG, one sub-folder per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        label = i % classes
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.array([40 + 20 * label, 200 - 15 * label, 100], dtype=np.float64)
        pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")


def measure(root: str, size: int, in_memory: bool, workers: int, batch_size: int) -> dict:
    """Set up the datamodule and read two training epochs, in this process."""
    import torch

    from lit_dl.data import ImageFolderDataModule

    torch.manual_seed(0)
    start = time.perf_counter()
    dm = ImageFolderDataModule(
        root=root, image_size=[size, size], in_memory=in_memory, num_workers=workers, batch_size=batch_size
    )
    dm.setup("fit")
    setup = time.perf_counter() - start
    loader = dm.train_dataloader()
    epochs = []
    for epoch in range(2):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += len(images)
        epochs.append(seen / (time.perf_counter() - start))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    return {"setup": setup, "epochs": epochs, "peak_mib": peak, "train": len(dm.datasets["train"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1, help="the disk loader's worker processes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # one case, in a child process
    args = parser.parse_args(argv)
    if args.measure:
        root, in_memory, workers = args.measure.split(",")
        print(json.dumps(measure(root, args.size, in_memory == "1", int(workers), args.batch_size)))
        return
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_folder(Path(folder), args.images, args.size, args.classes)
        seconds = time.perf_counter() - start
        print(f"wrote {args.images} PNG images of {args.size}x{args.size} in {seconds:.1f} s")
        print("| reading | setup s | epoch 1 images/s | epoch 2 images/s | peak RSS MiB |")
        print("|---|---|---|---|---|")
        for name, in_memory, workers in (
            ("in memory", 1, 0),
            ("from disk, 0 workers", 0, 0),
            (f"from disk, {args.workers} worker(s)", 0, args.workers),
        ):
            command = [
                sys.executable,
                __file__,
                "--size",
                str(args.size),
                "--batch-size",
                str(args.batch_size),
            ]
            output = subprocess.run(
                [*command, "--measure", f"{folder},{in_memory},{workers}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            r = json.loads(output.strip().splitlines()[-1])
            first, second = r["epochs"]
            print(f"| {name} | {r['setup']:.1f} | {first:,.0f} | {second:,.0f} | {r['peak_mib']:,.0f} |")


if __name__ == "__main__":
    main()
