"""Recurrent networks: Elman RNN, LSTM and GRU for sequence classification, forecasting and text.

All take batch-first inputs ``(B, T, F)``. Variable-length batches pass ``lengths``
``(B,)`` and are packed, so padding never enters the recurrence.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
State = Tensor | tuple[Tensor, Tensor]


def run_recurrent(rnn: nn.RNNBase, x: Tensor | PackedSequence, state: State | None) -> tuple:
    """``rnn(x, state)``, in float32 when bf16 autocast is on for the CPU.

    oneDNN has no bf16 LSTM/GRU kernel on processors without AVX-512 (it fails with "could not
    create a primitive descriptor for the LSTM forward propagation primitive"), so on the CPU the
    recurrent layer runs in float32 inside a ``bf16-mixed`` run; the layers around it stay in bf16.
    GPUs run it as autocast decides.
    """
    if x.is_cuda or not torch.is_autocast_enabled("cpu"):
        return rnn(x, state)
    if state is not None:
        state = tuple(s.float() for s in state) if isinstance(state, tuple) else state.float()
    with torch.autocast("cpu", enabled=False):
        return rnn(x.float(), state)


def recurrent_layer(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, bidirectional: bool
) -> nn.RNNBase:
    """An ``nn.RNN`` (tanh), ``nn.LSTM`` or ``nn.GRU`` with a gradient-friendly initialisation.

    Input-to-hidden weights: Xavier-uniform; hidden-to-hidden weights: orthogonal (their
    singular values are 1, so repeated multiplication neither explodes nor vanishes at
    the start); biases zero, except the LSTM forget gate at 1 so cells remember by default
    (Jozefowicz et al., 2015).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    layer = CELLS[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
        batch_first=True,
    )
    for name, param in layer.named_parameters():
        if name.startswith("weight_ih"):
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):
            for block in param.data.chunk(param.shape[0] // hidden_size):
                nn.init.orthogonal_(block)
        elif name.startswith("bias"):
            nn.init.zeros_(param)
            if cell == "lstm" and name.startswith("bias_ih"):
                param.data[hidden_size : 2 * hidden_size] = 1.0  # gate order: input, forget, cell, output
    return layer


class RecurrentEncoder(nn.Module):
    """Runs a recurrent layer over ``(B, T, F)``; packs the batch when ``lengths`` are given.

    Args:
        input_size: features per time step.
        hidden_size: units per layer and direction.
        num_layers: stacked layers.
        cell: ``rnn`` (Elman, tanh), ``lstm`` or ``gru``.
        dropout: between stacked layers.
        bidirectional: also read the sequence backwards.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.rnn = recurrent_layer(cell, input_size, hidden_size, num_layers, dropout, bidirectional)
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, Tensor, State]:
        """``x (B, T, F)`` -> ``outputs (B, T, H')``, ``last (B, H')`` at each sequence's true end, state."""
        if lengths is None:
            outputs, state = run_recurrent(self.rnn, x, state)
            last_forward = outputs[:, -1]
        else:
            packed = pack_padded_sequence(
                x, lengths.cpu().clamp_min(1), batch_first=True, enforce_sorted=False
            )
            packed_out, state = run_recurrent(self.rnn, packed, state)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
            index = (lengths.clamp_min(1) - 1).to(outputs.device)
            last_forward = outputs[torch.arange(len(outputs), device=outputs.device), index]
        if self.rnn.bidirectional:
            half = self.rnn.hidden_size
            # The backward direction has read the whole sequence at position 0.
            last = torch.cat([last_forward[:, :half], outputs[:, 0, half:]], dim=-1)
        else:
            last = last_forward
        return outputs, last, state


class RecurrentClassifier(nn.Module):
    """One prediction per sequence: recurrent encoder, then a linear head on the last (or mean) state.

    Input ``x (B, T, in_features)`` and optional ``lengths (B,)``; output ``(B, out_features)``.

    Args:
        in_features: features per time step.
        out_features: outputs (1 for binary, else classes).
        hidden_size, num_layers, cell, dropout, bidirectional: see :class:`RecurrentEncoder`.
        pooling: ``last`` (state at the sequence end) or ``mean`` (over valid steps).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        bidirectional: bool = False,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.encoder = RecurrentEncoder(in_features, hidden_size, num_layers, cell, dropout, bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.output_size, out_features)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, F)`` (+ lengths) -> ``(B, out_features)``."""
        outputs, last, _ = self.encoder(x, lengths)
        if self.pooling == "mean":
            steps = torch.arange(x.shape[1], device=x.device)
            valid = (
                (steps[None, :] < lengths[:, None].to(x.device))
                if lengths is not None
                else torch.ones_like(outputs[..., 0], dtype=torch.bool)
            )
            last = (outputs * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
        return self.head(self.dropout(last))


class RecurrentForecaster(nn.Module):
    """Reads a window ``(B, window, in_features)`` and predicts the next ``out_features`` values at once.

    With ``linear_skip=k`` a linear map from the last ``k`` steps of the window (every input
    channel) to the forecast is added to the recurrent head's ("wide and deep"): the network then
    contains an autoregressive model of order ``k``, which a short series fits at once, and the
    recurrent part learns what it misses. The map starts at zero, so an untrained network still
    outputs the recurrent head alone. A window shorter than ``k`` steps is padded with zeros in
    front (with the task's relative inputs: "as the last value").

    Args:
        in_features: features per time step (the target plus any extra inputs).
        out_features: the horizon.
        hidden_size, num_layers, cell, dropout: see :class:`RecurrentEncoder`.
        linear_skip: steps the linear path reads; 0: none.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        linear_skip: int = 0,
    ) -> None:
        super().__init__()
        if linear_skip < 0:
            raise ValueError(f"linear_skip must be 0 or a number of steps, got {linear_skip}")
        self.encoder = RecurrentEncoder(in_features, hidden_size, num_layers, cell, dropout)
        self.head = nn.Linear(self.encoder.output_size, out_features)
        self.skip_steps = int(linear_skip)
        self.skip = nn.Linear(linear_skip * in_features, out_features) if linear_skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, window, F)`` -> ``(B, horizon)``."""
        _, last, _ = self.encoder(x)
        out = self.head(last)
        if self.skip is None:
            return out
        recent = x[:, -self.skip_steps :]
        if recent.shape[1] < self.skip_steps:
            recent = nn.functional.pad(recent, (0, 0, self.skip_steps - recent.shape[1], 0))
        return out + self.skip(recent.flatten(1))


class CharRNN(nn.Module):
    """A character language model: embedding, recurrent layers, a projection to the vocabulary.

    Args:
        vocab_size: characters in the vocabulary (from the datamodule).
        embedding_dim: width of the character embeddings.
        hidden_size, num_layers, cell, dropout: see :class:`RecurrentEncoder`.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        cell: str = "lstm",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.encoder = RecurrentEncoder(embedding_dim, hidden_size, num_layers, cell, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``tokens (B, T)`` long -> ``logits (B, T, vocab_size)`` and the recurrent state."""
        outputs, _, state = self.encoder(self.embedding(tokens), state=state)
        return self.head(self.dropout(outputs)), state
