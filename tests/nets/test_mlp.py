"""MLP and TabularMLP: shapes, activations, optional layers, embeddings, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_dl.nets import MLP, TabularMLP
from lit_dl.nets.mlp import ACTIVATIONS


@pytest.mark.parametrize(
    ("in_features", "out_features", "hidden_sizes"),
    [(5, 1, ()), (5, 3, (8,)), (12, 2, (16, 8, 4)), (1, 1, (2,))],
)
def test_mlp_output_shape(in_features, out_features, hidden_sizes):
    net = MLP(in_features, out_features, hidden_sizes)
    assert net(torch.randn(7, in_features)).shape == (7, out_features)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == len(hidden_sizes) + 1
    assert [m.out_features for m in linears] == [*hidden_sizes, out_features]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation(name):
    net = MLP(4, 2, (6,), activation=name)
    assert any(isinstance(m, ACTIVATIONS[name]) for m in net.modules())
    out = net(torch.randn(3, 4))
    assert out.shape == (3, 2)
    assert torch.isfinite(out).all()


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        MLP(4, 1, (8,), activation="swishy")


def test_non_positive_sizes_raise():
    with pytest.raises(ValueError):
        MLP(0, 1)


def test_batch_norm_and_dropout_only_when_asked():
    plain = MLP(4, 1, (8, 8))
    assert not any(isinstance(m, nn.BatchNorm1d | nn.Dropout) for m in plain.modules())

    net = MLP(4, 1, (8, 6), dropout=0.3, batch_norm=True)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)]
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert [m.num_features for m in norms] == [8, 6]
    assert len(drops) == 2 and all(m.p == pytest.approx(0.3) for m in drops)
    # Linear layers before batch norm need no bias of their own.
    hidden = [m for m in net.modules() if isinstance(m, nn.Linear)][:-1]
    assert all(m.bias is None for m in hidden)


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    net = MLP(4, 3, (64,), dropout=0.5)
    x = torch.randn(16, 4)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_tabular_mlp_without_embeddings():
    net = TabularMLP(6, 1, hidden_sizes=(8,))
    assert len(net.embeddings) == 0
    x_num = torch.randn(5, 6)
    out = net(x_num, torch.zeros(5, 0, dtype=torch.long))
    assert out.shape == (5, 1)
    torch.testing.assert_close(out, net(x_num))  # x_cat is optional without embeddings


@pytest.mark.parametrize(("embedding_dim", "widths"), [(16, [2, 5, 1]), (3, [2, 3, 1])])
def test_tabular_mlp_uses_embeddings(embedding_dim, widths):
    cards = [4, 10, 2]
    net = TabularMLP(3, 2, cat_cardinalities=cards, embedding_dim=embedding_dim, hidden_sizes=(8,))
    assert [e.num_embeddings for e in net.embeddings] == cards
    assert [e.embedding_dim for e in net.embeddings] == widths
    first = next(m for m in net.mlp.modules() if isinstance(m, nn.Linear))
    assert first.in_features == 3 + sum(widths)

    x_num = torch.randn(6, 3)
    x_cat = torch.stack([torch.randint(0, k, (6,)) for k in cards], dim=1)
    out = net(x_num, x_cat)
    assert out.shape == (6, 2)
    # Changing a category changes the output: the embedding is really used.
    other = x_cat.clone()
    other[:, 1] = (other[:, 1] + 1) % cards[1]
    assert not torch.allclose(net(x_num, other), out)


def test_tabular_mlp_with_embeddings_needs_x_cat():
    net = TabularMLP(3, 1, cat_cardinalities=[4])
    with pytest.raises(ValueError, match="x_cat"):
        net(torch.randn(2, 3))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_gradients_reach_every_parameter(batch_norm):
    torch.manual_seed(0)
    net = TabularMLP(
        5,
        3,
        cat_cardinalities=[3, 6],
        hidden_sizes=(8, 4),
        activation="gelu",
        batch_norm=batch_norm,
        dropout=0.1,
    )
    x_num = torch.randn(32, 5)
    x_cat = torch.stack([torch.arange(32) % 3, torch.arange(32) % 6], dim=1)
    net(x_num, x_cat).pow(2).mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_activation_names_ignore_case():
    net = MLP(4, 2, (6,), activation="GELU")
    assert any(isinstance(m, nn.GELU) for m in net.modules())


def test_linear_skip_adds_a_linear_path():
    torch.manual_seed(0)
    assert TabularMLP(3, 2, cat_cardinalities=[4], hidden_sizes=(8,)).linear is None
    net = TabularMLP(3, 2, cat_cardinalities=[4], hidden_sizes=(8,), linear_skip=True)
    width = 3 + net.embeddings[0].embedding_dim
    assert isinstance(net.linear, nn.Linear)
    assert (net.linear.in_features, net.linear.out_features) == (width, 2)

    x_num, x_cat = torch.randn(5, 3), torch.randint(0, 4, (5, 1))
    inputs = torch.cat([x_num, net.embeddings[0](x_cat[:, 0])], dim=1)
    torch.testing.assert_close(net(x_num, x_cat), net.mlp(inputs) + net.linear(inputs))

    net(x_num, x_cat).sum().backward()
    assert net.linear.weight.grad is not None and net.linear.weight.grad.abs().sum() > 0
    assert net.embeddings[0].weight.grad.abs().sum() > 0


def test_linear_skip_without_hidden_layers_is_two_linear_maps():
    net = TabularMLP(4, 1, hidden_sizes=(), linear_skip=True)
    x = torch.randn(6, 4)
    (layer,) = net.mlp.layers
    expected = x @ (layer.weight + net.linear.weight).T + layer.bias + net.linear.bias
    torch.testing.assert_close(net(x), expected)
