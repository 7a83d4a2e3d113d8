"""Tabular VAE (TVAE, Xu et al., 2019): learn a table's rows, then sample new ones, embed or score them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Normal
from torchmetrics.aggregation import CatMetric

from lit_dl.errors import ConfigError
from lit_dl.tasks.generative import TableGenerativeTask, ranking_auroc

CATEGORY_DECODING = ("draw", "argmax")


class TabularVAETask(TableGenerativeTask):
    """A variational autoencoder over rows transformed by the data's fitted :class:`TableTransform`.

    Loss per row (TVAE): ``loss_factor * reconstruction + KL``, where the reconstruction is a
    Gaussian negative log-likelihood (learned scale) of each numeric mode offset and the
    cross-entropy of each one-hot span. ``{stage}/loss`` is that negative ELBO (epoch means exact
    under DDP). The fidelity of samples (``val/fidelity``) is measured by the
    :class:`~lit_dl.callbacks.table_fidelity.TableFidelity` callback.

    A trained model also scores rows (``lit-dl predict``: :meth:`anomaly_terms`): the negative ELBO
    of each row, higher for rows unlike the training rows, and each column's part of the
    reconstruction error; with held-out classes in the data (``data.exclude_classes``) the test
    reports ``test/anomaly_auroc``. :meth:`encode` gives the latent posterior (``lit-dl embed``).

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
        # The modelled column each mode offset (T,) belongs to; the one-hot spans (S,) are one per
        # column, in column order (a number's modes or the categories).
        numeric = [i for i, column in enumerate(self.table.modelled) if column["kind"] == "numeric"]
        self.register_buffer("offset_owner", torch.tensor(numeric, dtype=torch.long), persistent=False)

    def configure_metrics(self) -> None:
        # Scores and labels of the test rows, gathered over processes (anomaly AUROC at epoch end).
        held_out = bool(self.data_spec.anomaly_classes)
        self.anomaly_scores = CatMetric() if held_out else None
        self.anomaly_labels = CatMetric() if held_out else None

    @property
    def latent_dim(self) -> int:
        return int(self.net.latent_dim)

    @property
    def column_names(self) -> list[str]:
        """The modelled columns, in the order of :meth:`column_errors`."""
        return [str(column["name"]) for column in self.table.modelled]

    def encode(self, x: Tensor) -> Normal:
        """The posterior ``q(z|x)`` of transformed rows ``(B, D)``: mean and scale ``(B, L)``."""
        mu, logvar = self.net.encode(x)
        return Normal(mu.float(), torch.exp(0.5 * logvar.float()), validate_args=False)  # no host read

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw reconstruction ``(B, D)``, posterior mean and log-variance ``(B, L)`` of rows ``(B, D)``."""
        return self.net(x)

    # ------------------------------------------------------------ loss
    def reconstruction_terms(self, x: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
        """The reconstruction error of rows ``x`` from raw outputs, in nats, less its constant
        ``log sigma`` terms: the Gaussian error of each mode offset ``(B, T)``,
        ``(x - tanh(raw))^2 / (2 sigma^2)``, and the cross-entropy of each one-hot span ``(B, S)``."""
        x, raw = x.float(), raw.float()
        sigma = self.net.sigma[self.offset_index].float()
        offsets = (x[:, self.offset_index] - torch.tanh(raw[:, self.offset_index])) ** 2 / (2 * sigma**2)
        # All one-hot spans at once: gathered into (B, S, K_max), padded with -inf logits.
        logits = torch.cat([raw, raw.new_full((len(x), 1), -torch.inf)], dim=1)[:, self.span_index]
        target = torch.cat([x, x.new_full((len(x), 1), -1.0)], dim=1)[:, self.span_index].argmax(dim=2)
        cross_entropy = -torch.log_softmax(logits, dim=2).gather(2, target[..., None]).squeeze(2)
        return offsets, cross_entropy

    def negative_elbo(self, x: Tensor) -> Tensor:
        """``(loss_factor * reconstruction + KL)`` per row, averaged over the batch ``(B, D)``."""
        recon, mu, logvar = self(x)
        mu, logvar = mu.float(), logvar.float()
        offsets, cross_entropy = self.reconstruction_terms(x, recon)
        log_sigma = torch.log(self.net.sigma[self.offset_index].float()).sum() * len(x)
        loss = offsets.sum() + log_sigma + cross_entropy.sum()
        kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
        return (self.hparams.loss_factor * loss + kl) / len(x)

    # ------------------------------------------------------------ anomaly scores
    def column_errors(self, x: Tensor, raw: Tensor) -> Tensor:
        """Reconstruction error of each modelled column ``(B, C)`` in nats, from rows ``x`` and raw outputs.

        A number's error is the Gaussian error of its mode offset plus the cross-entropy of its mode;
        a category's is the cross-entropy of its value: zero for a perfect reconstruction (the
        negative log-likelihood less its constant ``log sigma`` terms).
        """
        offsets, cross_entropy = self.reconstruction_terms(x, raw)
        return cross_entropy.index_add(1, self.offset_owner, offsets)  # one span per column, in order

    @torch.no_grad()
    def anomaly_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Anomaly score ``(B,)`` and column errors ``(B, C)`` of transformed rows ``(B, D)``.

        The score is the row's negative ELBO in nats, ``-log p(x|z) + KL(q(z|x) || p(z))``, with the
        decoder read at the posterior mean (deterministic: the same row always gets the same score).
        """
        posterior = self.encode(x)
        errors = self.column_errors(x, self.net.decode(posterior.loc.to(x.dtype)))
        kl = 0.5 * (posterior.loc**2 + posterior.scale**2 - 1 - 2 * torch.log(posterior.scale)).sum(dim=1)
        constant = 0.0
        if len(self.offset_index):  # the Gaussian terms left out of the errors: the same for every row
            sigma = self.net.sigma[self.offset_index].float()
            constant = float((torch.log(sigma) + 0.5 * math.log(2 * math.pi)).sum())
        return errors.sum(dim=1) + constant + kl, errors

    # ------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        loss = self.negative_elbo(batch[0])
        self.log_mean("train/loss", loss, len(batch[0]), on_step=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        self.net.sigma.data.clamp_(0.01, 1.0)  # TVAE keeps the offsets' noise scale in this range

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self.log_mean("val/loss", self.negative_elbo(batch[0]), len(batch[0]), prog_bar=True)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> dict[str, Tensor]:
        loss = self.negative_elbo(batch[0])
        self.log_mean("test/loss", loss, len(batch[0]), prog_bar=True)
        if self.anomaly_scores is not None and len(batch) > 1:
            known = batch[1] >= 0  # rows without a label take no part
            held_out = torch.tensor(self.data_spec.anomaly_classes, device=batch[1].device)
            self.anomaly_scores.update(self.anomaly_terms(batch[0][known])[0].double())
            self.anomaly_labels.update(torch.isin(batch[1][known], held_out).long())
        return {"loss": loss}

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.anomaly_scores is None or not self.anomaly_scores.update_called:
            return
        scores, labels = self.anomaly_scores.compute(), self.anomaly_labels.compute()
        self.anomaly_scores.reset()
        self.anomaly_labels.reset()
        if labels.min() == labels.max():
            return  # one kind of row only: no ranking to judge
        auroc = ranking_auroc(scores, labels)
        self.log("test/anomaly_auroc", auroc, sync_dist=False)  # the same on every process

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        """``lit-dl predict``: each row's anomaly score and column errors ``(B, 1 + C)``."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        score, errors = self.anomaly_terms(x)
        return torch.cat([score[:, None], errors], dim=1)

    def prediction_columns(self, outputs: Tensor) -> dict[str, Any]:
        """``anomaly_score`` (negative ELBO, nats: higher is less like the training rows), each column's
        reconstruction error ``error_<column>`` (nats) and ``top_column``, the one with the largest error."""
        names = self.column_names
        errors = outputs[:, 1:].float().numpy()
        columns: dict[str, Any] = {"anomaly_score": outputs[:, 0].float().numpy()}
        columns.update({f"error_{name}": errors[:, i] for i, name in enumerate(names)})
        columns["top_column"] = np.array(names, dtype=object)[errors.argmax(axis=1)]
        return columns

    def summarize(self, metrics: dict[str, float]) -> str | None:
        text = super().summarize(metrics)
        if "test/anomaly_auroc" in metrics:
            auroc = f"anomaly AUROC of the held-out classes {metrics['test/anomaly_auroc']:.3f}"
            text = f"{text}; {auroc}" if text else auroc
        return text

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
