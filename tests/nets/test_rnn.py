"""Recurrent networks: shapes, packing, initialisation."""

from __future__ import annotations

import pytest
import torch

from lit_dl.nets import CharRNN, RecurrentClassifier, RecurrentEncoder, RecurrentForecaster
from lit_dl.nets.rnn import recurrent_layer


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_shapes(cell: str, bidirectional: bool, pooling: str) -> None:
    net = RecurrentClassifier(
        3,
        5,
        hidden_size=8,
        num_layers=2,
        cell=cell,
        dropout=0.1,
        bidirectional=bidirectional,
        pooling=pooling,
    )
    x, lengths = torch.randn(4, 7, 3), torch.tensor([7, 3, 1, 5])
    assert net(x, lengths).shape == (4, 5)
    assert net(x).shape == (4, 5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_does_not_change_the_output(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    net = RecurrentClassifier(
        3, 2, hidden_size=8, cell=cell, bidirectional=bidirectional, pooling="mean"
    ).eval()
    x = torch.randn(1, 4, 3)
    padded = torch.cat([x, torch.randn(1, 6, 3) * 100], dim=1)  # junk after the end must be ignored
    lengths = torch.tensor([4])
    torch.testing.assert_close(net(x, lengths), net(padded, lengths))


def test_last_state_is_taken_at_each_sequence_end() -> None:
    torch.manual_seed(0)
    encoder = RecurrentEncoder(2, hidden_size=6, cell="gru").eval()
    x = torch.randn(2, 5, 2)
    _, last, _ = encoder(x, torch.tensor([5, 2]))
    _, short_last, _ = encoder(x[1:, :2])
    torch.testing.assert_close(last[1], short_last[0])


def test_lstm_initialisation_is_gradient_friendly() -> None:
    layer = recurrent_layer("lstm", 3, 16, 1, 0.0, False)
    bias = layer.bias_ih_l0.detach()
    assert torch.all(bias[16:32] == 1.0) and torch.all(bias[:16] == 0) and torch.all(bias[32:] == 0)
    for block in layer.weight_hh_l0.detach().chunk(4):
        torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)  # orthogonal
    with pytest.raises(ValueError, match="cell"):
        recurrent_layer("transformer", 3, 16, 1, 0.0, False)


def test_forecaster_and_char_rnn_shapes() -> None:
    assert RecurrentForecaster(3, 12, hidden_size=8)(torch.randn(5, 24, 3)).shape == (5, 12)
    lm = CharRNN(30, embedding_dim=8, hidden_size=16, num_layers=2)
    logits, state = lm(torch.randint(0, 30, (2, 9)))
    assert logits.shape == (2, 9, 30)
    more, _ = lm(torch.randint(0, 30, (2, 1)), state)  # the state carries over to the next chunk
    assert more.shape == (2, 1, 30)


def test_gradients_reach_every_parameter() -> None:
    net = RecurrentClassifier(3, 1, hidden_size=8, num_layers=2, cell="lstm", bidirectional=True)
    net(torch.randn(4, 6, 3), torch.tensor([6, 4, 2, 1])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
