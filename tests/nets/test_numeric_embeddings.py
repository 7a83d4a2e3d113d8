"""Periodic (PLR) embeddings of numbers and the TabularMLP that uses them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from lit_dl.nets import TabularMLP
from lit_dl.nets.mlp import PeriodicEmbeddings

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest on shared cores


def test_periodic_embeddings_shape_and_formula() -> None:
    torch.manual_seed(0)
    emb = PeriodicEmbeddings(3, embedding_dim=5, n_frequencies=4, frequency_scale=0.5)
    x = torch.randn(7, 3)
    out = emb(x)
    assert out.shape == (7, 3, 5)
    assert (out >= 0).all()  # ReLU
    # Feature 1 by hand: ReLU(W_1 [cos(2 pi c_1 x), sin(2 pi c_1 x)] + b_1).
    angles = 2 * math.pi * emb.frequencies[1] * x[:, 1:2]
    expected = torch.relu(torch.cat([angles.cos(), angles.sin()], dim=1) @ emb.weight[1] + emb.bias[1])
    torch.testing.assert_close(out[:, 1], expected)


def test_each_feature_has_its_own_embedding_unless_lite() -> None:
    torch.manual_seed(0)
    full = PeriodicEmbeddings(2, embedding_dim=3, n_frequencies=2)
    lite = PeriodicEmbeddings(2, embedding_dim=3, n_frequencies=2, lite=True)
    assert full.weight.shape == (2, 4, 3) and lite.weight.shape == (1, 4, 3)
    with torch.no_grad():
        lite.frequencies.copy_(torch.ones(2, 2))
    same = torch.tensor([[0.3, 0.3]])
    out = lite(same)
    torch.testing.assert_close(out[:, 0], out[:, 1])  # same value, same frequencies, shared layer


def test_frequencies_start_within_three_scales() -> None:
    torch.manual_seed(0)
    emb = PeriodicEmbeddings(200, n_frequencies=40, frequency_scale=0.2, min_frequency_scale=None)
    assert emb.frequencies.abs().max() <= 0.6 + 1e-6
    assert 0.15 < emb.frequencies.std() < 0.25


def test_frequency_scales_spread_from_the_smallest_to_the_largest() -> None:
    torch.manual_seed(0)
    emb = PeriodicEmbeddings(2000, n_frequencies=3, frequency_scale=10.0, min_frequency_scale=0.1)
    spread = emb.frequencies.std(dim=0)  # one standard deviation per frequency slot
    torch.testing.assert_close(spread, torch.tensor([0.1, 1.0, 10.0]), rtol=0.1, atol=0.0)
    assert (emb.frequencies.abs() <= 3 * torch.tensor([0.1, 1.0, 10.0]) + 1e-5).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_features": 0}, "positive sizes"),
        ({"n_features": 2, "embedding_dim": 0}, "positive sizes"),
        ({"n_features": 2, "frequency_scale": 0.0}, "frequency scales must be positive"),
        ({"n_features": 2, "min_frequency_scale": 50.0}, "min_frequency_scale <= frequency_scale"),
    ],
)
def test_bad_sizes_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PeriodicEmbeddings(**kwargs)


def test_tabular_mlp_with_periodic_numbers_and_category_embeddings() -> None:
    torch.manual_seed(0)
    net = TabularMLP(
        4,
        1,
        cat_cardinalities=[3, 6],
        hidden_sizes=(8,),
        numeric_embedding="periodic",
        numeric_embedding_dim=5,
        n_frequencies=3,
        linear_skip=True,
    )
    first = net.mlp.layers[0]
    assert first.in_features == 4 * 5 + 2 + 3  # embedded numbers, then category embeddings
    assert net.linear.in_features == 4 + 2 + 3  # the linear path reads the raw numbers
    x_num, x_cat = torch.randn(6, 4), torch.stack([torch.randint(0, 3, (6,)), torch.randint(0, 6, (6,))], 1)
    out = net(x_num, x_cat)
    assert out.shape == (6, 1)
    out.sum().backward()
    assert net.numeric_embeddings.frequencies.grad is not None
    assert all(e.weight.grad is not None for e in net.embeddings)


def test_tabular_mlp_without_numbers_skips_the_numeric_embedding() -> None:
    net = TabularMLP(0, 2, cat_cardinalities=[4], hidden_sizes=(8,), numeric_embedding="periodic")
    assert net.numeric_embeddings is None
    assert net(torch.zeros(3, 0), torch.tensor([[0], [1], [3]])).shape == (3, 2)


def test_without_numeric_embedding_the_parameter_names_are_unchanged() -> None:
    """``numeric_embedding=none`` (the default) builds the layers of a TabularMLP from before the
    option, so its old checkpoints load (strictly) into it."""
    net = TabularMLP(3, 1, cat_cardinalities=[4], hidden_sizes=(8,), linear_skip=True)
    assert net.numeric_embeddings is None
    assert set(net.state_dict()) == {
        "embeddings.0.weight",
        "mlp.layers.0.weight",
        "mlp.layers.0.bias",
        "mlp.layers.2.weight",
        "mlp.layers.2.bias",
        "linear.weight",
        "linear.bias",
    }
    assert net.mlp.layers[0].in_features == net.linear.in_features == 3 + 2


def test_unknown_numeric_embedding_raises() -> None:
    with pytest.raises(ValueError, match="numeric_embedding must be one of none, periodic"):
        TabularMLP(3, 1, numeric_embedding="quantile")


def test_periodic_net_learns_a_step_function_a_plain_mlp_draws_smoothly() -> None:
    """A threshold on one feature (what trees find at once): the periodic net fits it closer."""
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 256)[:, None]
    y = (x > 0.37).float()

    def fit(net: TabularMLP) -> float:
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        for _ in range(100):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), y)
            loss.backward()
            optimizer.step()
        return loss.item()

    torch.manual_seed(1)
    plain = fit(TabularMLP(1, 1, hidden_sizes=(16,)))
    torch.manual_seed(1)
    periodic = fit(TabularMLP(1, 1, hidden_sizes=(16,), numeric_embedding="periodic"))
    assert periodic < plain / 2
