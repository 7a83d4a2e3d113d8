"""The GAN's manual optimisation: which network each update changes, and how many updates a batch makes."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_dl.data.spec import DataSpec
from lit_dl.errors import ConfigError
from lit_dl.tasks import GANTask
from lit_dl.tasks.gan import discriminator_loss, generator_loss

pytestmark = pytest.mark.usefixtures("one_thread")

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "betas": [0.5, 0.999]}
SPEC = DataSpec(
    task_type="classification",
    modality="images",
    inputs={"in_channels": 1, "image_size": [8, 8]},
    classes=["a", "b", "c"],
    scale="unit",
)


def tiny_gan(**overrides: Any) -> GANTask:
    kwargs: dict[str, Any] = {
        "generator": {"_target_": "lit_dl.nets.DCGANGenerator", "channels": [16, 8]},
        "discriminator": {"_target_": "lit_dl.nets.DCGANDiscriminator", "channels": [8, 16], "norm": "layer"},
        "optimizer_g": ADAM,
        "optimizer_d": ADAM,
        "latent_dim": 4,
        "data": SPEC,
    }
    return GANTask(**{**kwargs, **overrides})


def loader(batches: int = 4, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batches * batch_size, 1, 8, 8, generator=generator)
    labels = torch.randint(3, (batches * batch_size,), generator=generator)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def fit(model: GANTask, batches: int, callbacks: list[L.Callback] | None = None, **trainer: Any) -> L.Trainer:
    run = L.Trainer(
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
        **trainer,
    )
    run.fit(model, train_dataloaders=loader(batches))
    return run


def test_each_update_changes_only_its_own_network() -> None:
    torch.manual_seed(0)
    model = tiny_gan(n_critic=1)
    records: list[tuple[str, bool, bool]] = []
    original_step = torch.optim.Adam.step

    def spying_step(optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        before_g, before_d = snapshot(model.generator), snapshot(model.discriminator)
        result = original_step(optimizer, *args, **kwargs)
        name = "g" if optimizer.param_groups[0]["params"][0] is next(model.generator.parameters()) else "d"
        records.append((name, changed(before_g, model.generator), changed(before_d, model.discriminator)))
        return result

    torch.optim.Adam.step = spying_step  # type: ignore[method-assign]
    try:
        fit(model, batches=2)
    finally:
        torch.optim.Adam.step = original_step  # type: ignore[method-assign]
    # Per batch: the discriminator's update (only D changes), then the generator's (only G changes).
    # (BatchNorm running statistics of G are buffers, not weights: left out of the comparison below.)
    assert [r[0] for r in records] == ["d", "g", "d", "g"]
    for name, g_changed, d_changed in records:
        assert (g_changed, d_changed) == ((False, True) if name == "d" else (True, False)), records


@pytest.mark.parametrize(("n_critic", "d_steps", "g_steps"), [(1, 4, 4), (2, 4, 2), (4, 4, 1)])
def test_optimizer_steps_per_batch_follow_n_critic(n_critic: int, d_steps: int, g_steps: int) -> None:
    torch.manual_seed(0)
    model = tiny_gan(n_critic=n_critic)
    trainer = fit(model, batches=4)
    optimizer_g, optimizer_d = (o.optimizer for o in model.optimizers())

    def adam_steps(optimizer: torch.optim.Optimizer) -> int:
        states = [optimizer.state[p] for p in optimizer.param_groups[0]["params"] if p in optimizer.state]
        return int(states[0]["step"]) if states else 0

    assert adam_steps(optimizer_d) == d_steps
    assert adam_steps(optimizer_g) == g_steps
    assert trainer.global_step == d_steps + g_steps  # manual optimisation counts every optimizer step


def test_ema_generator_follows_the_generator_and_is_what_samples() -> None:
    torch.manual_seed(0)
    model = tiny_gan(ema_decay=0.5)
    before = snapshot(model.generator_ema.module)
    fit(model, batches=3)
    assert changed(before, model.generator_ema.module)
    assert all(not p.requires_grad for p in model.generator_ema.parameters())
    assert model.sampling_generator() is model.generator_ema.module
    images = model.generate(5, generator=torch.Generator().manual_seed(1))
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wgan_gp"])
def test_every_loss_trains_in_bf16_mixed_and_stays_finite(loss: str) -> None:
    torch.manual_seed(0)
    model = tiny_gan(loss=loss, n_critic=1, gradient_clip_val=1.0)
    before = snapshot(model.generator)
    trainer = fit(model, batches=2, precision="bf16-mixed")
    assert changed(before, model.generator)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(trainer.callback_metrics["train/d_loss"])


def test_gradient_penalty_is_zero_for_a_unit_slope_critic_and_positive_otherwise() -> None:
    model = tiny_gan(loss="wgan_gp")
    model._trainer = None
    real, fake = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)

    class Linear(torch.nn.Module):
        def __init__(self, slope: float) -> None:
            super().__init__()
            self.direction = torch.randn(64)
            self.direction = slope * self.direction / self.direction.norm()

        def forward(self, x: torch.Tensor, labels: Any = None) -> torch.Tensor:
            return x.flatten(1) @ self.direction

    class NoScaler:
        precision_plugin = object()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GANTask, "trainer", property(lambda self: NoScaler()))
        model.discriminator = Linear(1.0)
        assert model.gradient_penalty(real, fake, None).item() == pytest.approx(0.0, abs=1e-8)
        model.discriminator = Linear(3.0)
        assert model.gradient_penalty(real, fake, None).item() == pytest.approx(4.0, rel=1e-5)


def test_losses_by_hand() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    softplus = torch.nn.functional.softplus
    assert discriminator_loss("non_saturating", real, fake).item() == pytest.approx(
        (softplus(-real).mean() + softplus(fake).mean()).item()
    )
    # hinge: mean(relu(1 - real)) + mean(relu(1 + fake)) = (0 + 2)/2 + (1.5 + 0)/2
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(1.75)
    assert discriminator_loss("wgan_gp", real, fake).item() == pytest.approx(-1.25 - 0.5)
    assert generator_loss("hinge", fake).item() == pytest.approx(1.25)


def test_conditional_generator_samples_the_asked_class_and_rejects_unknown_ones() -> None:
    model = tiny_gan(conditional=True)
    labels = model.condition_labels("b", 4)
    assert labels.tolist() == [1, 1, 1, 1]
    assert model.condition_labels("2", 2).tolist() == [2, 2]
    with pytest.raises(ConfigError, match="the classes are a, b, c"):
        model.condition_labels("z", 2)
    with pytest.raises(ConfigError, match="not class-conditional"):
        tiny_gan().condition_labels("a", 2)


def test_batch_norm_discriminator_is_refused_with_wgan_gp() -> None:
    with pytest.raises(ConfigError, match=r"model\.discriminator\.norm=batch"):
        tiny_gan(
            loss="wgan_gp",
            discriminator={"_target_": "lit_dl.nets.DCGANDiscriminator", "channels": [8], "norm": "batch"},
        )


def test_conditional_generate_takes_a_class_or_one_index_per_image() -> None:
    model = tiny_gan(conditional=True)
    generator = torch.Generator().manual_seed(0)
    assert model.generate(4, generator=generator, condition="b").shape == (4, 1, 8, 8)
    assert model.generate(3, generator=generator, condition=torch.tensor([0, 1, 2])).shape == (3, 1, 8, 8)
    with pytest.raises(ConfigError, match="expected 3 class indices"):
        model.generate(3, condition=torch.tensor([0, 1]))
    assert model.sample(5, generator=generator, condition="a").shape == (5, 1, 8, 8)
    with pytest.raises(ConfigError, match="takes no option"):
        model.sample(2, temperature=1.0)
