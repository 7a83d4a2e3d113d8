"""Tabular VAE (TVAE, Xu et al., 2019): learn a table's rows, then sample new ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_dl.errors import ConfigError
from lit_dl.tasks.generative import TableGenerativeTask

CATEGORY_DECODING = ("draw", "argmax")


class TabularVAETask(TableGenerativeTask):
    """A variational autoencoder over rows transformed by the data's fitted :class:`TableTransform`.

    Loss per row (TVAE): ``loss_factor * reconstruction + KL``, where the reconstruction is a
    Gaussian negative log-likelihood (learned scale) of each numeric mode offset and the
    cross-entropy of each one-hot span. ``{stage}/loss`` is that negative ELBO (epoch means exact
    under DDP). The fidelity of samples (``val/fidelity``) is measured by the
    :class:`~lit_dl.callbacks.table_fidelity.TableFidelity` callback.

    Args:
        net: ``_target_`` entry of :class:`~lit_dl.nets.tabular_generative.TabularVAE`
            (``data_dim`` is added).
        optimizer: ``_target_`` entry of the optimiser with ``_partial_: true``.
        loss_factor: weight of the reconstruction term against the KL term.
        categories: how a sample's categories are read from the decoder: ``draw`` one from each
            span's softmax (the decoder's own likelihood, as the offsets get their noise), or
            ``argmax`` (TVAE's reference code; it under-writes rare categories whenever the
            decoder is unsure, e.g. the share of ``>50K`` on Adult falls as training goes on).
        **kwargs: see :class:`~lit_dl.tasks.base.Task` (``data``, ``scheduler``, ...).
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        loss_factor: float = 2.0,
        categories: str = "draw",
        **kwargs: Any,
    ) -> None:
        if categories not in CATEGORY_DECODING:
            raise ConfigError(
                f"model.categories must be one of {', '.join(CATEGORY_DECODING)}, got {categories!r}"
            )
        super().__init__(optimizer=optimizer, **kwargs)

    def configure_models(self) -> None:
        super().configure_models()
        self.net = self.build_part("net", data_dim=self.table.output_dim)

    @property
    def latent_dim(self) -> int:
        return int(self.net.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw reconstruction ``(B, D)``, posterior mean and log-variance ``(B, L)`` of rows ``(B, D)``."""
        return self.net(x)

    # ------------------------------------------------------------ loss
    def negative_elbo(self, x: Tensor) -> Tensor:
        """``(loss_factor * reconstruction + KL)`` per row, averaged over the batch ``(B, D)``."""
        recon, mu, logvar = self(x)
        recon, mu, logvar, x = recon.float(), mu.float(), logvar.float(), x.float()
        loss = x.new_zeros(())
        dims = self.offset_index
        if len(dims):
            sigma = self.net.sigma[dims].float()
            error = (x[:, dims] - torch.tanh(recon[:, dims])) ** 2 / (2 * sigma**2)
            loss = loss + error.sum() + torch.log(sigma).sum() * len(x)
        if len(self.span_index):
            # All one-hot spans at once: gathered into (B, S, K_max), padded with -inf logits.
            logits = torch.cat([recon, recon.new_full((len(x), 1), -torch.inf)], dim=1)[:, self.span_index]
            target = torch.cat([x, x.new_full((len(x), 1), -1.0)], dim=1)[:, self.span_index].argmax(dim=2)
            loss = loss - torch.log_softmax(logits, dim=2).gather(2, target[..., None]).sum()
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
        return (self.hparams.loss_factor * loss + kl) / len(x)

    # ------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss = self.negative_elbo(batch[0])
        self.log_mean("train/loss", loss, len(batch[0]), on_step=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.net.sigma.data.clamp_(0.01, 1.0)  # TVAE keeps the offsets' noise scale in this range

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.log_mean("val/loss", self.negative_elbo(batch[0]), len(batch[0]), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        loss = self.negative_elbo(batch[0])
        self.log_mean("test/loss", loss, len(batch[0]), prog_bar=True)
        return {"loss": loss}

    # ------------------------------------------------------------ sampling
    def generate_batch(
        self, n: int, generator: torch.Generator | None, slot: tuple[int, int] | None
    ) -> np.ndarray:
        """``n`` transformed rows ``(n, D)``: decoded latent draws, offsets with the learned noise (TVAE).

        One-hot spans are drawn from the decoder's softmax (``categories="draw"``) or left as
        logits, read by their largest entry in the inverse transform (``"argmax"``). The VAE
        cannot be asked for a category: :meth:`generate` keeps the rows that have it.
        """
        raw = self.net.decode(self.latent(n, generator)).float()
        noise = self.randn(*raw.shape, generator=generator) * self.net.sigma.float()
        rows = self.rows_from_outputs(
            raw, generator, offset_noise=noise, draw=self.hparams.categories == "draw"
        )
        return rows.cpu().numpy()
