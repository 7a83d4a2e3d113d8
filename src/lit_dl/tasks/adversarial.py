"""What the image GAN and the tabular GAN share: adversarial losses, the gradient penalty, clipping.

Plain functions (no task inherits them), so each GAN reads top to bottom and calls what it uses:

- :data:`DISCRIMINATOR_LOSSES` / :data:`GENERATOR_LOSSES`, through :func:`discriminator_loss`
  and :func:`generator_loss`: the loss table (``non_saturating``, ``hinge``, ``wgan``);
- :func:`gradient_penalty`: WGAN-GP on points between real and generated samples, with PacGAN
  packing (one mixing weight per pack of ``pac`` samples), float16-safe under AMP
  (:func:`input_gradients`);
- :func:`clip_gradient_norm`: gradient clipping for manual optimisation, called from
  ``on_before_optimizer_step`` where Lightning has unscaled the gradients.

The DDP flag both GANs need (each update trains one network) is
:func:`lit_dl.compat.allow_unused_parameters`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_dl.compat import amp_grad_scaler

# The discriminator's (critic's) loss on the scores of real and generated samples.
DISCRIMINATOR_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    # -log D(x) - log(1 - D(G(z))), D = sigmoid(score) (Goodfellow et al. 2014)
    "non_saturating": lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    "hinge": lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
    # Wasserstein critic (Arjovsky et al. 2017); the gradient penalty is added apart
    "wgan": lambda real, fake: fake.mean() - real.mean(),
}
# The generator's loss on the scores of its samples.
GENERATOR_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {
    "non_saturating": lambda fake: F.softplus(-fake).mean(),  # -log D(G(z))
    "hinge": lambda fake: -fake.mean(),
    "wgan": lambda fake: -fake.mean(),
}


def loss_kind(name: str) -> str:
    """The entry of the loss table for a loss name: ``wgan_gp`` (with its penalty) scores as ``wgan``."""
    return name.removesuffix("_gp")


def discriminator_loss(kind: str, real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """The discriminator's (critic's) loss on scores of real and generated samples, in float32."""
    return DISCRIMINATOR_LOSSES[loss_kind(kind)](real_scores.float(), fake_scores.float())


def generator_loss(kind: str, fake_scores: Tensor) -> Tensor:
    """The generator's loss on the scores of its samples, in float32."""
    return GENERATOR_LOSSES[loss_kind(kind)](fake_scores.float())


def input_gradients(trainer: Any, scores: Tensor, inputs: Tensor) -> Tensor:
    """``d sum(scores) / d inputs`` in float32, with the graph kept (for a gradient penalty).

    Under 16-mixed the scores are scaled before ``autograd.grad`` and the gradients unscaled
    after, as PyTorch's AMP recipe for gradient penalties does, so small gradients do not
    underflow in float16.
    """
    total = scores.float().sum()
    scaler = amp_grad_scaler(trainer)
    if scaler is not None:
        total = scaler.scale(total)
    (grads,) = torch.autograd.grad(total, inputs, create_graph=True)
    grads = grads.float()
    return grads / scaler.get_scale() if scaler is not None else grads


def gradient_penalty(
    trainer: Any, critic: Callable[..., Tensor], real: Tensor, fake: Tensor, *extra: Any, pac: int = 1
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``E[(||grad D(x_hat)|| - 1)^2]`` at points between real and fake.

    Args:
        trainer: the task's trainer (its AMP scaler, if any; None outside a trainer).
        critic: called as ``critic(mixed, *extra)``; returns one score per pack ``(B / pac,)``.
        real, fake: samples ``(B, ...)`` with ``B`` a multiple of ``pac`` (images or rows).
        extra: further critic inputs (the class labels of a conditional GAN).
        pac: samples the critic judges together (PacGAN): each pack gets one mixing weight and
            the norm is that of the whole pack's gradient.
    """
    packs = len(real) // pac
    alpha = torch.rand(packs, *([1] * real.ndim), device=real.device, dtype=real.dtype)
    alpha = alpha.expand(packs, pac, *real.shape[1:]).reshape(real.shape)
    mixed = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    grads = input_gradients(trainer, critic(mixed, *extra), mixed)
    return ((grads.reshape(packs, -1).norm(2, dim=1) - 1) ** 2).mean()


def clip_gradient_norm(
    module: L.LightningModule, optimizer: torch.optim.Optimizer, max_norm: float | None
) -> None:
    """Clip the norm of ``optimizer``'s gradients to ``max_norm`` (None or 0: leave them).

    Call it from ``on_before_optimizer_step`` of a task with manual optimisation: there
    ``Trainer(gradient_clip_val)`` does not apply, and clipping before ``optimizer.step()``
    would clip the SCALED gradients under 16-mixed, while in this hook Lightning has unscaled them.
    """
    if max_norm:
        module.clip_gradients(optimizer, gradient_clip_val=float(max_norm), gradient_clip_algorithm="norm")


__all__ = [
    "DISCRIMINATOR_LOSSES",
    "GENERATOR_LOSSES",
    "clip_gradient_norm",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "input_gradients",
    "loss_kind",
]
