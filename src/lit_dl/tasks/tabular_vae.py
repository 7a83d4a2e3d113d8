"""Tabular VAE (TVAE, Xu et al., 2019): learn a table's rows, then sample new ones."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection

from lit_dl.data.table_transform import TableTransform, draw_rows
from lit_dl.errors import ConfigError
from lit_dl.tasks.base import BaseTask
from lit_dl.tasks.table_fidelity import TableFidelity

CATEGORY_DECODING = ("draw", "argmax")


def check_rows(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer (rows to generate), got {n!r}")
    return n


class TabularVAETask(TableFidelity, BaseTask):
    """A variational autoencoder over rows transformed by a fitted :class:`TableTransform`.

    Loss per row (TVAE): ``loss_factor * reconstruction + KL``, where the reconstruction is a
    Gaussian negative log-likelihood (learned scale) of each numeric mode offset and the
    cross-entropy of each one-hot span. ``val/loss`` is that negative ELBO on validation rows;
    ``val/fidelity`` compares a fixed sample with the validation rows: the mean of the column-shape
    and the column-pair similarities (see :func:`~lit_dl.evaluation.synthetic_report.fidelity`).

    Args:
        net: ``_target_`` entry of :class:`~lit_dl.nets.tabular_generative.TabularVAE`
            (``data_dim`` is added).
        optimizer: ``_target_`` entry of the optimiser with ``_partial_: true``.
        transform: the fitted transform as plain data (from the datamodule; kept in the checkpoint).
        loss_factor: weight of the reconstruction term against the KL term.
        fidelity_rows: rows generated each validation epoch for ``val/fidelity``.
        categories: how a sample's categories are read from the decoder: ``draw`` one from each
            span's softmax (the decoder's own likelihood, as the offsets get their noise), or
            ``argmax`` (TVAE's reference code; it under-writes rare categories whenever the
            decoder is unsure, e.g. the share of ``>50K`` on Adult falls as training goes on).
        **kwargs: see :class:`~lit_dl.tasks.base.BaseTask`.
    """

    task_type = "tabular_generative"
    training_by_sampling: ClassVar[bool] = False

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        transform: dict[str, Any],
        loss_factor: float = 2.0,
        fidelity_rows: int = 2000,
        categories: str = "draw",
        **kwargs: Any,
    ) -> None:
        if categories not in CATEGORY_DECODING:
            raise ConfigError(
                f"model.categories must be one of {', '.join(CATEGORY_DECODING)}, got {categories!r}"
            )
        self.table = TableTransform.from_state_dict(transform)
        kwargs["train_metrics"] = False  # no per-batch metrics: fidelity is measured per epoch
        super().__init__(net, optimizer, **kwargs)
        spans = self.table.spans
        offsets = np.cumsum([0] + [size for _, size in spans])
        self.offset_dims = [int(offsets[i]) for i, (kind, _) in enumerate(spans) if kind == "tanh"]
        self.softmax_spans = [
            (int(offsets[i]), size) for i, (kind, size) in enumerate(spans) if kind == "softmax"
        ]
        # Column of each one-hot slot, (S, K_max); short spans point at a padding column (index D).
        width = max((size for _, size in self.softmax_spans), default=0)
        index = torch.full((len(self.softmax_spans), width), self.table.output_dim, dtype=torch.long)
        for i, (start, size) in enumerate(self.softmax_spans):
            index[i, :size] = torch.arange(start, start + size)
        self.register_buffer("span_index", index, persistent=False)

    # ------------------------------------------------------------ building
    def net_kwargs(self) -> dict[str, Any]:
        return {"data_dim": self.table.output_dim}

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({})

    # ------------------------------------------------------------ loss
    def negative_elbo(self, x: Tensor) -> Tensor:
        """``(loss_factor * reconstruction + KL)`` per row, averaged over the batch ``(B, D)``."""
        recon, mu, logvar = self(x)
        recon, mu, logvar, x = recon.float(), mu.float(), logvar.float(), x.float()
        loss = x.new_zeros(())
        if self.offset_dims:
            dims = torch.tensor(self.offset_dims, device=x.device)
            sigma = self.net.sigma[dims].float()
            error = (x[:, dims] - torch.tanh(recon[:, dims])) ** 2 / (2 * sigma**2)
            loss = loss + error.sum() + torch.log(sigma).sum() * len(x)
        if self.softmax_spans:
            # All one-hot spans at once: gathered into (B, S, K_max), padded with -inf logits.
            logits = torch.cat([recon, recon.new_full((len(x), 1), -torch.inf)], dim=1)[:, self.span_index]
            target = torch.cat([x, x.new_full((len(x), 1), -1.0)], dim=1)[:, self.span_index].argmax(dim=2)
            loss = loss - torch.log_softmax(logits, dim=2).gather(2, target[..., None]).sum()
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
        return (self.hparams.loss_factor * loss + kl) / len(x)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss = self.negative_elbo(batch[0])
        self.log_step("train", loss, self.train_metrics, batch_size=len(batch[0]))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.net.sigma.data.clamp_(0.01, 1.0)  # TVAE keeps the offsets' noise scale in this range

    def _eval_step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        x = batch[0]
        loss = self.negative_elbo(x)
        self.log_step(stage, loss, self.metric_collection(stage), batch_size=len(x))  # exact under DDP
        self.keep_rows(x)
        return loss

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        return {"loss": self._eval_step(batch, "test")}

    # ------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None) -> np.ndarray:
        """``n`` transformed rows ``(n, D)``: decoded latent draws, offsets with the learned noise (TVAE).

        One-hot spans are drawn from the decoder's softmax (``categories="draw"``) or left as
        logits, read by their largest entry in the inverse transform (``"argmax"``).
        """
        training = self.training
        self.eval()
        try:
            z = torch.randn(n, self.net.latent_dim, generator=generator, device=self.device)
            raw = self.net.decode(z).float()
            noise = torch.randn(raw.shape, generator=generator, device=self.device)
            rows = raw.clone()
            for dim in self.offset_dims:
                rows[:, dim] = torch.tanh(raw[:, dim]) + noise[:, dim] * self.net.sigma[dim].float()
            for start, size in self.softmax_spans:
                logits = raw[:, start : start + size]
                if self.hparams.categories == "draw":
                    pick = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator)
                    logits = F.one_hot(pick.squeeze(1), size).float()
                rows[:, start : start + size] = logits
        finally:
            self.train(training)
        return rows.cpu().numpy()

    def sample(
        self, n: int = 1000, condition: str | None = None, generator: torch.Generator | None = None
    ) -> pd.DataFrame:
        """``n`` synthetic rows with the original columns, order and dtypes.

        ``condition="column=value"`` keeps only rows with that category (e.g. ``churn=Yes``).
        """
        n = check_rows(n)
        slot = self.table.condition_slot(condition) if condition else None
        rows = draw_rows(lambda size: self.generate(size, generator), self.table, n, slot)
        return self.table.inverse_transform(rows)
