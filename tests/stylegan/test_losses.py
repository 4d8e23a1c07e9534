"""Loss functions against hand-computed values and their defining properties."""
from __future__ import annotations

import math

import pytest
import torch

from stylegan import losses
from stylegan.images import contrast_ratio


def test_gram_matrix_normalisation() -> None:
    features = torch.arange(12.0).reshape(1, 2, 2, 3)
    flat = features.reshape(2, 6)
    assert torch.allclose(losses.gram_matrix(features)[0], flat @ flat.T / 12)


def test_style_loss_matches_the_seed_formula() -> None:
    # Gatys et al. (2016) per layer, without their ¼: 1/(N²M²) Σ (G - A)², G = F·Fᵀ, N channels, M = H·W.
    generator = torch.Generator().manual_seed(0)
    features = torch.rand(1, 3, 4, 5, generator=generator)
    style = torch.rand(1, 3, 4, 5, generator=generator)
    flat, style_flat = features.reshape(3, 20), style.reshape(3, 20)
    expected = ((flat @ flat.T - style_flat @ style_flat.T) ** 2).sum() / (3 ** 2 * 20 ** 2)
    loss = losses.style_loss({"l": features}, {"l": losses.gram_matrix(style)})
    assert torch.allclose(loss, expected)
    assert losses.style_loss({"l": style}, {"l": losses.gram_matrix(style)}) == 0


def test_contrast_floor_loss_is_zero_above_the_floor_and_pushes_a_flattened_image_back() -> None:
    content = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert losses.contrast_floor_loss(content, content, 0.5) == 0
    assert losses.contrast_floor_loss(0.6 * content + 0.2, content, 0.5) == 0  # 60 % kept: above the floor
    flat = (0.1 * content + 0.45).requires_grad_()  # keeps 10 % of the contrast: (0.5 - 0.1)² each
    loss = losses.contrast_floor_loss(flat, content, 0.5)
    assert loss.item() == pytest.approx(0.16, rel=1e-4)
    loss.backward()
    stepped = flat.detach() - 0.05 * flat.grad / flat.grad.abs().max()
    assert losses.contrast_floor_loss(stepped, content, 0.5) < loss  # descent restores contrast
    # As much contrast as the content, but a pattern of its own (the content's pixels shuffled): penalised.
    shuffled = content.flatten(2)[..., torch.randperm(256, generator=torch.Generator().manual_seed(1))].view_as(content)
    assert contrast_ratio(shuffled, content) == pytest.approx(torch.ones(2), rel=1e-5)  # all the contrast...
    assert losses.contrast_floor_loss(shuffled, content, 0.5) > 0.15  # ...but little of the content: ~(0.5 - 0.1)²
    assert losses.contrast_floor_loss(1 - content, content, 0.5) == pytest.approx(2.25, rel=1e-4)  # inverted: (0.5 + 1)²


def test_strength_linearity_loss_is_zero_on_a_straight_path_and_penalises_an_early_jump() -> None:
    content = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    full = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    strength = torch.tensor([0.25, 0.5])
    straight = content + strength[:, None, None, None] * (full - content)
    assert losses.strength_linearity_loss(straight, full, content, strength).item() == pytest.approx(0, abs=1e-10)
    # at s = 0.05 already 80 % of the way: ((0.8 - 0.05) / 1)² each
    early = (content + 0.8 * (full - content)).requires_grad_()
    loss = losses.strength_linearity_loss(early, full, content, torch.tensor([0.05, 0.05]))
    assert loss.item() == pytest.approx(0.75 ** 2, rel=1e-4)
    loss.backward()
    stepped = early.detach() - 0.05 * early.grad / early.grad.abs().max()
    assert losses.strength_linearity_loss(stepped, full, content, torch.tensor([0.05, 0.05])) < loss


def test_relative_style_loss_counts_every_layer_alike_at_any_scale_or_as_weighted() -> None:
    generator = torch.Generator().manual_seed(2)
    outputs = {"a": torch.rand(2, 3, 5, 5, generator=generator), "b": 100 * torch.rand(2, 4, 3, 3, generator=generator)}
    style = {"a": torch.rand(2, 3, 5, 5, generator=generator), "b": 100 * torch.rand(2, 4, 3, 3, generator=generator)}
    targets = {name: losses.gram_matrix(value) for name, value in style.items()}

    def alone(name: str) -> torch.Tensor:
        return losses.relative_style_loss({name: outputs[name]}, {name: targets[name]})

    assert torch.isclose(losses.relative_style_loss(outputs, targets), (alone("a") + alone("b")) / 2)
    assert torch.isclose(losses.relative_style_loss(outputs, targets, {"a": 1.0, "b": 3.0}),
                         (alone("a") + 3 * alone("b")) / 4)
    assert torch.isclose(losses.relative_style_loss(outputs, targets, {"a": 0.0, "b": 2.0}), alone("b"))
    assert torch.isclose(alone("b"), losses.relative_style_loss({"b": 10 * outputs["b"]}, {"b": 100 * targets["b"]}))


def test_contrastive_style_loss_rewards_each_output_nearest_its_own_style() -> None:
    generator = torch.Generator().manual_seed(0)
    styles = torch.rand(4, 3, 6, 6, generator=generator) * torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None, None]
    targets = {"l": losses.gram_matrix(styles)}
    matched = losses.contrastive_style_loss({"l": styles + 0.01 * torch.rand(4, 3, 6, 6, generator=generator)}, targets)
    shuffled = losses.contrastive_style_loss({"l": styles[[1, 2, 3, 0]]}, targets)
    assert matched < 0.1 < math.log(4) < shuffled
    # One texture for every style: the output says nothing about which style it was given.
    same = torch.rand(1, 3, 6, 6, generator=generator).expand(4, -1, -1, -1)
    assert torch.isclose(losses.contrastive_style_loss({"l": same}, {"l": losses.gram_matrix(same)}),
                         torch.tensor(math.log(4)))
    # Only distance ratios count: scaling a layer's activations (and so its Grams ×s²) changes nothing.
    outputs = torch.rand(4, 3, 6, 6, generator=generator, requires_grad=True)
    base = losses.contrastive_style_loss({"l": outputs}, targets)
    scaled = losses.contrastive_style_loss({"l": 7 * outputs}, {"l": 49 * targets["l"]})
    assert torch.isclose(base, scaled, rtol=1e-4)
    base.backward()
    assert outputs.grad.abs().sum() > 0 and outputs.grad.isfinite().all()


def test_contrastive_negatives_from_a_queue_add_styles_to_be_told_apart_from_except_ones_own() -> None:
    generator = torch.Generator().manual_seed(1)
    styles = torch.rand(3, 3, 6, 6, generator=generator) * torch.tensor([1.0, 2.0, 3.0])[:, None, None, None]
    outputs = {"l": styles + 0.3 * torch.rand(3, 3, 6, 6, generator=generator)}
    targets = {"l": losses.gram_matrix(styles)}
    batch_only = losses.contrastive_style_loss(outputs, targets)
    others = {"l": losses.gram_matrix(torch.rand(5, 3, 6, 6, generator=generator) * 2.5)}
    assert losses.contrastive_style_loss(outputs, targets, negative_grams=others) > batch_only
    # Another view of a sample's own style is not a negative: masked, it is left out.
    own_view = {"l": targets["l"][:1]}
    masked = losses.contrastive_style_loss(outputs, targets, negative_grams=own_view,
                                           same_style=torch.tensor([[True], [False], [False]]))
    unmasked = losses.contrastive_style_loss(outputs, targets, negative_grams=own_view)
    assert unmasked > masked + 0.05  # unmasked, output 0 ties with its own style's copy
    everything_masked = losses.contrastive_style_loss(outputs, targets, negative_grams=own_view,
                                                      same_style=torch.ones(3, 1, dtype=torch.bool))
    assert torch.isclose(everything_masked, batch_only)


def test_content_and_total_variation() -> None:
    assert losses.content_loss(torch.ones(1, 2, 2, 2), torch.zeros(1, 2, 2, 2)) == 1
    flat = torch.full((1, 3, 4, 4), 0.5)
    assert losses.total_variation_loss(flat) == 0
    stripes = torch.zeros(1, 1, 2, 2)
    stripes[..., 1] = 1
    assert losses.total_variation_loss(stripes) == 1


def test_adversarial_losses_reward_the_right_side() -> None:
    good_real, good_fake = torch.full((4, 10), 1.0), torch.full((4, 10), -1.0)
    for kind, (d_loss, g_loss) in losses.ADVERSARIAL_LOSSES.items():
        confident = d_loss(good_real, good_fake.clamp(min=0) if kind == "lsgan" else good_fake)
        confused = d_loss(good_fake, good_real)
        assert confident < confused, kind
        assert g_loss(good_real) < g_loss(good_fake), kind
    assert losses.lsgan_d_loss(torch.ones(3), torch.zeros(3)) == 0
    assert losses.lsgan_g_loss(torch.ones(3)) == 0
    assert losses.hinge_d_loss(torch.full((3,), 2.0), torch.full((3,), -2.0)) == 0


def test_gradient_penalty_is_zero_for_unit_slope_critic() -> None:
    # D(x) = Σ x·w with ‖w‖ = 1 has gradient norm exactly 1 everywhere.
    weight = torch.randn(3 * 4 * 4)
    weight = weight / weight.norm()
    critic = lambda images: images.flatten(1) @ weight
    real, fake = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert losses.gradient_penalty(critic, real, fake) == pytest.approx(0, abs=1e-10)
    steep = lambda images: 3 * images.flatten(1) @ weight
    assert losses.gradient_penalty(steep, real, fake) == pytest.approx(4.0, rel=1e-5)


def test_total_generator_loss_is_the_seed_sum() -> None:
    total = losses.total_generator_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0), 0.5, 2.0)
    assert total == 1 + 0.5 * 2 + 2 * 3
