"""Pure metric functions of the quality benchmark (benchmarks/evaluate.py): colour distance, Gram
matrices for style identification, and identification from a distance matrix.

Images are (1, 3, H, W) tensors in [0, 1] (stylegan.images.to_tensor); features are VGG19
activations (B, C, h, w).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from stylegan.images import contrast_ratio, resize_long_side

COLOUR_SIDE = 256
COLOUR_DIRECTIONS = 64
COLOUR_QUANTILES = 256
COLOUR_SEED = 0


def colour_directions(count: int = COLOUR_DIRECTIONS, seed: int = COLOUR_SEED) -> np.ndarray:
    """(count, 3) fixed random unit directions of RGB space."""
    directions = np.random.default_rng(seed).standard_normal((count, 3))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def projected_quantiles(image: Tensor, directions: np.ndarray, side: int | None = COLOUR_SIDE,
                        count: int = COLOUR_QUANTILES) -> np.ndarray:
    """(count, D): quantiles (i + 0.5)/count of the image's pixels projected on each direction."""
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"expected a (1, 3, H, W) image, got shape {tuple(image.shape)}")
    if side is not None:
        image = resize_long_side(image, side)
    projected = np.sort(image[0].reshape(3, -1).T.double().numpy() @ directions.T, axis=0)  # (H·W, D)
    # numpy's default ("linear") quantile, from one sort instead of a partition per quantile
    position = (np.arange(count) + 0.5) / count * (len(projected) - 1)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, len(projected) - 1)
    fraction = (position - below)[:, None]
    return projected[below] + (projected[above] - projected[below]) * fraction


def colour_distance(output: Tensor, style: Tensor, side: int | None = COLOUR_SIDE,
                    directions: np.ndarray | None = None) -> float:
    """Sliced Wasserstein-1 distance between the RGB pixel distributions of two images, each resized to
    long side `side`: mean over directions and quantiles of |quantile_output - quantile_style|."""
    directions = colour_directions() if directions is None else directions
    difference = projected_quantiles(output, directions, side) - projected_quantiles(style, directions, side)
    return float(np.abs(difference).mean())


def gram_hw(features: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, C, C): G = F·Fᵀ / (h·w) (per-position average, not divided by C)."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (height * width)


def identification_distances_by_layer(image_grams: Mapping[str, Tensor],
                                      style_grams: Mapping[str, Tensor]) -> dict[str, float]:
    """Per layer, the mean squared difference of the Gram entries (same layers in both)."""
    if image_grams.keys() != style_grams.keys():
        raise ValueError(f"layers differ: {sorted(image_grams)} against {sorted(style_grams)}")
    return {name: torch.mean((image_grams[name] - style_grams[name]) ** 2).item() for name in image_grams}


def mean_over_layers(distances_by_layer: Mapping[str, float]) -> float:
    """The identification distance from `identification_distances_by_layer`: the mean over the layers."""
    return float(np.mean(list(distances_by_layer.values())))


def identification_distance(image_grams: Mapping[str, Tensor], style_grams: Mapping[str, Tensor]) -> float:
    """Mean over the layers of the mean squared difference of the Gram entries (same layers in both)."""
    return mean_over_layers(identification_distances_by_layer(image_grams, style_grams))


def nearest_styles(distances: np.ndarray) -> np.ndarray:
    """(outputs, styles) distances -> each output's nearest style index."""
    distances = np.asarray(distances)
    if distances.ndim != 2 or distances.shape[1] == 0:
        raise ValueError(f"expected an (outputs, styles) matrix, got shape {distances.shape}")
    return distances.argmin(axis=1)


def identification_rate(distances: np.ndarray, used_styles: Sequence[int]) -> float:
    """Share of outputs whose nearest style is the one they were made with."""
    nearest = nearest_styles(distances)
    if len(used_styles) != len(nearest):
        raise ValueError(f"{len(nearest)} outputs but {len(used_styles)} used styles")
    return float(np.mean(nearest == np.asarray(used_styles))) if len(nearest) else float("nan")


def identification_margin(distances: np.ndarray, used_styles: Sequence[int]) -> float:
    """Mean over outputs of ln(distance to the style used / distance to the nearest other style): below 0
    for an identified output, and unlike the identification rate it moves with every output's distances
    (a model choice on 128 pairs reads it as well as the count)."""
    distances = np.asarray(distances, dtype=np.float64)
    used = np.asarray(used_styles)
    if distances.ndim != 2 or distances.shape[1] < 2 or len(used) != len(distances):
        raise ValueError(f"expected (outputs, ≥ 2 styles) distances and one used style per output, got "
                         f"{distances.shape} and {len(used)}")
    rows = np.arange(len(distances))
    others = distances.copy()
    others[rows, used] = np.inf
    return float(np.mean(np.log(distances[rows, used] / others.min(axis=1)))) if len(rows) else float("nan")


FLAT_CONTRAST = 0.25  # an output with under a quarter of its content's luminance contrast has collapsed


def contrast_kept(output: Tensor, content: Tensor) -> float:
    """(1, 3, H, W) output over content, `stylegan.images.contrast_ratio`: near 0 when a method collapses
    the picture to a near-flat image (which no colour transfer can pull apart again)."""
    return float(contrast_ratio(output, content)[0])
