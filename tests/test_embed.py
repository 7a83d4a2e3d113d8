"""``lit-dl embed``: a VAE's latent codes, segments, their profile and map, through the real CLI.

The models are the 0.1.0 fixture checkpoints (a tabular VAE of the churn table, an image VAE and a
CNN of digits): tiny and barely trained, which is all the verb's bookkeeping needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lit_dl.cli import main
from lit_dl.data.churn import make_churn_frame
from lit_dl.verbs.common import restore_from_checkpoint
from lit_dl.verbs.embed import by_size, choose_segments, feature_differences

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints" / "v0.1.0"
TVAE, IMAGE_VAE, CNN = (FIXTURES / f"{name}.ckpt" for name in ("churn_tvae", "digits_vae", "digits_cnn"))

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\).*"),
]


@pytest.fixture(scope="module")
def customers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "customers.csv"
    make_churn_frame(300, seed=7).to_csv(path, index=False)
    return path


def embed(tmp_path: Path, *args: str) -> None:
    main(["embed", *args, f"hydra.run.dir={tmp_path / 'run'}"])


def test_codes_segments_profile_and_map_of_a_table(customers: Path, tmp_path: Path) -> None:
    output = tmp_path / "codes.csv"
    embed(tmp_path, f"ckpt_path={TVAE}", f"input={customers}", f"output={output}", "segments=3")
    frame = pd.read_csv(customers)
    codes = pd.read_csv(output)
    latent = 8
    means = [f"latent_mean_{i}" for i in range(latent)]
    assert codes.columns.tolist() == [
        "customer_id",
        *means,
        *(f"latent_var_{i}" for i in range(latent)),
        "segment",
    ]
    assert codes["customer_id"].tolist() == frame["customer_id"].tolist()
    assert (codes[[f"latent_var_{i}" for i in range(latent)]] > 0).all().all()

    # The codes are the model's posterior means of the rows, as the datamodule prepares them.
    model, datamodule = restore_from_checkpoint(TVAE)
    dataset, _ = datamodule.load_inputs(str(customers))
    with torch.no_grad():
        expected = model.encode(dataset.tensors[0][:5]).loc.numpy()
    assert np.allclose(codes[means].to_numpy()[:5], expected, atol=1e-5)

    # Segments numbered by size; the profile counts them and reads features in original units.
    sizes = codes["segment"].value_counts().sort_index()
    assert sizes.index.tolist() == [0, 1, 2] and sizes.is_monotonic_decreasing
    profile = pd.read_csv(tmp_path / "codes_segments.csv")
    assert profile["segment"].astype(str).tolist() == ["0", "1", "2", "all"]
    assert profile["size"].tolist() == [*sizes.tolist(), len(frame)]
    assert profile["share"].iloc[:3].sum() == pytest.approx(1.0)
    churn = (frame["churn"] == "Yes").to_numpy()  # the data's positive label
    for segment in range(3):
        rate = churn[(codes["segment"] == segment).to_numpy()].mean()
        assert profile.loc[segment, "churn_rate"] == pytest.approx(rate)
    assert profile.loc[3, "churn_rate"] == pytest.approx(churn.mean())
    first = profile.loc[0]
    in_first = (codes["segment"] == 0).to_numpy()
    column, _, value = first["feature_1"].partition("=")
    if not value:  # a number: segment mean against the mean of every row
        values = pd.to_numeric(frame[column], errors="coerce")
        assert first["segment_1"] == pytest.approx(values[in_first].mean())
        assert first["population_1"] == pytest.approx(values.mean())
    else:  # a category's value: its share in the segment against its share of every row
        is_value = frame[column].astype(str) == value
        assert first["segment_1"] == pytest.approx(is_value[in_first].mean())
        assert first["population_1"] == pytest.approx(is_value.mean())
    assert first["description"].startswith(first["feature_1"])
    assert "churn" not in " ".join(profile["description"].dropna())  # the target is the rate, not a feature
    with Image.open(tmp_path / "codes_map.png") as image:
        image.verify()


def test_auto_segments_try_each_k_of_the_range(customers: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "codes.parquet"
    embed(
        tmp_path, f"ckpt_path={TVAE}", f"input={customers}", f"output={output}", "segments=auto",
        "segments_method=gmm", "segments_range=[2,4]", "variance=false", "map=null",
    )  # fmt: skip
    codes = pd.read_parquet(output)
    assert not any(c.startswith("latent_var_") for c in codes.columns)
    assert 2 <= codes["segment"].nunique() <= 4
    assert not (tmp_path / "codes_map.png").exists()
    printed = capsys.readouterr().out
    assert f"wrote {codes['segment'].nunique()} segment profiles to" in printed


def test_choosing_k_finds_well_separated_groups() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    codes = np.concatenate(
        [c + rng.normal(0, 0.5, (n, 2)) for c, n in zip(centres, (60, 40, 20), strict=True)]
    )
    for method in ("kmeans", "gmm"):
        labels, scores = choose_segments(codes, "auto", method, (2, 6), seed=0)
        assert sorted(scores) == [2, 3, 4, 5, 6]
        assert np.bincount(labels).tolist() == [60, 40, 20], method  # segment 0 is the largest
    assert by_size(np.array([2, 2, 0, 1, 1, 1])).tolist() == [1, 1, 2, 0, 0, 0]


def test_features_that_differ_most_come_first() -> None:
    everyone = pd.DataFrame(
        {"tenure": [1.0, 2.0, 30.0, 40.0], "plan": ["a", "a", "b", "b"], "x": [1.0, 1, 1, 1]}
    )
    found = feature_differences(everyone.iloc[:2], everyone, ["tenure", "x"], ["plan"])
    assert [f["feature"] for f in found] == ["plan=a", "tenure", "x"]
    assert found[0]["segment"] == 1.0 and found[0]["population"] == 0.5 and found[0]["difference"] == 1.0
    assert found[1]["segment"] == 1.5 and found[1]["population"] == 18.25
    assert found[2]["difference"] == 0.0  # a constant column differs nowhere


def test_codes_of_images_name_their_files(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(load_digits().images[:6]):
        Image.fromarray((image * 255 / 16).astype("uint8")).save(folder / f"digit{i}.png")
    output = tmp_path / "codes.csv"
    embed(tmp_path, f"ckpt_path={IMAGE_VAE}", f"input={folder}", f"output={output}", "segments=2", "map=tsne")
    codes = pd.read_csv(output)
    assert [Path(f).name for f in codes["file"]] == [f"digit{i}.png" for i in range(6)]
    assert codes["segment"].nunique() == 2
    profile = pd.read_csv(tmp_path / "codes_segments.csv")
    assert profile.columns.tolist() == ["segment", "size", "share"]  # images: no columns to profile
    with Image.open(tmp_path / "codes_map.png") as image:
        image.verify()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["segments=1"], "segments=1 : give a number of segments of 2 or more"),
        (["segments=2", "segments_method=dbscan"], "segments_method must be one of kmeans, gmm"),
        (["segments=auto", "segments_range=[5,3]"], "segments_range must run from 2"),
        ([f"ckpt_path={CNN}"], "lit-dl embed needs a VAE checkpoint"),
        (["input=missing.csv"], "input file not found"),
        (["target=plan"], "target column 'plan' not in"),
        (["segments=301"], "segments=301 needs more rows than that; the input has 300"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    args: list[str], expected: str, customers: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    output = tmp_path / "codes.csv"
    line = fail_cli(
        "embed", f"ckpt_path={TVAE}", f"input={customers}", f"output={output}", *args,
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no codes, profile, map or run folder


def test_existing_outputs_are_kept_without_overwrite(
    customers: Path, tmp_path: Path, fail_cli: Callable[..., str]
) -> None:
    output = tmp_path / "codes.csv"
    (tmp_path / "codes_map.png").write_text("mine")
    line = fail_cli("embed", f"ckpt_path={TVAE}", f"input={customers}", f"output={output}",
                    f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert "codes_map.png exists: add overwrite=true" in line
    assert not output.exists() and (tmp_path / "codes_map.png").read_text() == "mine"
    embed(tmp_path, f"ckpt_path={TVAE}", f"input={customers}", f"output={output}", "overwrite=true")
    assert output.is_file() and (tmp_path / "codes_map.png").read_bytes().startswith(b"\x89PNG")


def test_wandb_gets_the_map_and_the_profile(
    customers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    output = tmp_path / "codes.csv"
    embed(
        tmp_path, f"ckpt_path={TVAE}", f"input={customers}", f"output={output}", "segments=2", "logger=wandb"
    )
    wandb.finish()
    (offline_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    media = offline_run / "files" / "media"
    assert list((media / "images" / "embed").glob("map_*.png"))  # the map, as the PNG written beside codes
    assert list((media / "table" / "embed").glob("segments_*.table.json"))  # the profile as a W&B table
