"""Training batches: content crops, and for each sample a freshly augmented view of a style.

Every sample's style is a new *view*: a random square crop of a style image at a random scale,
flipped, hue-rotated and re-saturated (sometimes a training photograph instead of an artwork).
The style code's statistics, the Gram and mean/std targets, the palette and the discriminator's
real patches all come from that one view, so the generator has to read the style image it is
given; no style has a fixed target it could learn to look up.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from stylegan.bands import band_signature
from stylegan.features import VGG19Features
from stylegan.generator import channel_moments, style_statistics
from stylegan.images import luminance, resize_long_side
from stylegan.losses import gram_matrix
from stylegan.palette import palette_of

from .config import TrainConfig
from .data import Folder, hue_saturation_matrix, random_crop, random_scale


@dataclass
class Batch:
    content: Tensor  # (B, 3, h, w) in [0, 1]
    style_crops: Tensor  # (B, 3, h, w) real patches of each sample's style view, for D
    style_statistics: Tensor  # (B, D) statistics of each style view (the code's input)
    target_grams: dict[str, Tensor]  # layer -> (B, C, C) normalised Grams of each style view
    target_moments: dict[str, tuple[Tensor, Tensor]]  # layer -> per-channel (mean, std), each (B, C)
    palettes: Tensor  # (B, K, 3, Q) each style view's palette (`stylegan.palette`)
    strength: Tensor  # (B,) 0 (learn the identity) or 1 (full style)
    styles: Tensor  # (B,) which style each view shows: its style bank index, or -1 - i for training photograph i
    partial_strength: Tensor | None = None  # (B,) in (0, 1) for the strength-linearity term, when it is on
    band_signatures: Tensor | None = None  # (B, L, W) each style view's band signature, with `bands_in_loss`


@dataclass
class StyleBank:
    """The training styles: images at style_long_side and their statistics as a whole (as at inference)."""
    paths: list[Path]
    images: list[Tensor]  # (3, H, W) uint8
    full_statistics: Tensor  # (S, D): each whole image at style_image_size

    @property
    def names(self) -> list[str]:
        return [path.stem for path in self.paths]

    @cached_property
    def contrast(self) -> Tensor:
        """(S,) each style image's luminance standard deviation."""
        return torch.stack([luminance(image[None].float().cpu() / 255).std() for image in self.images])

    def sampling_weights(self, pale_style_weight: float) -> Tensor:
        """(S,) 1 + pale_style_weight · max(0, 1 − c / median c), c = `contrast`: pale styles drawn more often."""
        return 1 + pale_style_weight * (1 - self.contrast / self.contrast.median().clamp_min(1e-6)).clamp_min(0)


@torch.no_grad()
def build_style_bank(folder: Folder, vgg: VGG19Features, config: TrainConfig, device: torch.device) -> StyleBank:
    layers, size = config.generator.style_layers, config.generator.style_image_size
    statistics = [style_statistics(vgg(resize_long_side((image.float() / 255)[None].to(device), size), layers),
                                   layers)[0] for image in folder.images]
    return StyleBank(folder.paths, folder.images, torch.stack(statistics))


def style_view(image: Tensor, config: TrainConfig, generator: torch.Generator) -> Tensor:
    """(3, H, W) uint8 -> (3, s, s) float view, s = config.style_view_size: a square crop covering
    `style_crop_range` of the short side, flipped half the time, hue-rotated with probability
    `hue_rotation_probability`, with its saturation scaled within `saturation_range`, and with
    probability `fade_probability` faded: every pixel moved towards the view's mean colour, keeping a
    share of its contrast drawn from `fade_range`."""
    low, high = config.style_crop_range
    fraction = low + (high - low) * float(torch.rand((), generator=generator))
    view = random_crop(image, config.style_view_size,
                       config.style_view_size / (min(image.shape[-2:]) * fraction), generator)
    rotate = float(torch.rand((), generator=generator)) < config.hue_rotation_probability
    angle = 2 * torch.pi * float(torch.rand((), generator=generator)) if rotate else 0.0
    low, high = config.saturation_range
    saturation = low + (high - low) * float(torch.rand((), generator=generator))
    view = torch.einsum("ij,jhw->ihw", hue_saturation_matrix(angle, saturation), view).clamp(0, 1)
    # Drawn only when enabled, so runs without fading keep their random stream.
    if config.fade_probability and float(torch.rand((), generator=generator)) < config.fade_probability:
        low, high = config.fade_range
        kept = low + (high - low) * float(torch.rand((), generator=generator))
        mean = view.mean((1, 2), keepdim=True)
        view = mean + kept * (view - mean)
    return view


def sample_batch(contents: Folder, bank: StyleBank, config: TrainConfig, generator: torch.Generator,
                 device: torch.device, vgg: VGG19Features) -> Batch:
    size, count = config.crop_size, config.batch_size
    stored_scale = 1 + config.scale_jitter  # contents are stored at long side × (1 + jitter)

    def content_index() -> int:
        return int(torch.randint(len(contents.images), (1,), generator=generator))

    content = torch.stack([random_crop(contents.images[content_index()], size,
                                       random_scale(config.scale_jitter, generator) / stored_scale, generator)
                           for _ in range(count)])
    # whole: the bank index whose whole-image statistics are the sample's code input; styles: see `Batch.styles`
    sources, whole, styles = [], [], []
    own_colours = (dataclasses.replace(config, hue_rotation_probability=0.0, saturation_range=(1.0, 1.0),
                                       fade_probability=0.0) if config.whole_style_code_probability else config)
    weights = bank.sampling_weights(config.pale_style_weight) if config.pale_style_weight else None
    for _ in range(count):
        if float(torch.rand((), generator=generator)) < config.photo_style_probability:
            photo = content_index()
            sources.append(contents.images[photo])
            whole.append(None)
            styles.append(-1 - photo)
        else:
            # Drawn uniformly unless pale styles are weighted, so runs without it keep their random stream.
            index = (int(torch.multinomial(weights, 1, generator=generator)) if weights is not None
                     else int(torch.randint(len(bank.images), (1,), generator=generator)))
            sources.append(bank.images[index])
            styles.append(index)
            # Drawn only when enabled, so runs without it keep their random stream.
            reads_whole = (config.whole_style_code_probability
                           and float(torch.rand((), generator=generator)) < config.whole_style_code_probability)
            whole.append(index if reads_whole else None)
    views = torch.stack([style_view(source, config if index is None else own_colours, generator)
                         for source, index in zip(sources, whole)]).to(device)
    offsets = torch.randint(config.style_view_size - size + 1, (count, 2), generator=generator).tolist()
    style_crops = torch.stack([view[:, top:top + size, left:left + size] for view, (top, left) in zip(views, offsets)])
    strength = (torch.rand(count, generator=generator) >= config.identity_probability).float()
    strength[0] = 1.0  # every batch trains the style path
    # Drawn only when the term is on, so runs without it keep their random stream.
    partial = torch.rand(count, generator=generator).to(device) if config.strength_linearity_weight else None
    with torch.no_grad():
        layers = tuple(dict.fromkeys((*config.style_layers, *config.generator.style_layers)))
        features = vgg(views.contiguous(memory_format=torch.channels_last), layers)
        grams = {name: gram_matrix(features[name]) for name in config.style_layers}
        moments = channel_moments(features, layers)
        statistics = style_statistics(features, config.generator.style_layers, moments)
        palettes = palette_of(views)
        signatures = band_signature(views) if config.bands_in_loss else None
        for sample, index in enumerate(whole):
            if index is not None:
                statistics[sample] = bank.full_statistics[index].to(statistics)
    return Batch(content.to(device), style_crops, statistics, grams,
                 {name: moments[name] for name in config.style_layers}, palettes, strength.to(device),
                 torch.tensor(styles), partial, signatures)
