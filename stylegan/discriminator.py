"""Style-conditioned PatchGAN discriminator: one logit per overlapping image patch.

PatchGAN (Isola et al., 2017) judges local texture; a projection term (Miyato & Koyama,
2018) conditions each patch's logit on the target style's statistics, so the question is
"is this patch in *this* style", not just "does this look painted". Spectral norm
(Miyato et al., 2018) and extra scales (Wang et al., 2018) are config switches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class DiscriminatorConfig:
    style_statistics_dim: int = 1920  # GeneratorConfig.style_statistics_dim
    base_channels: int = 32
    num_layers: int = 3  # stride-2 convs; receptive field ~ 2^(num_layers+2) px
    num_scales: int = 1
    spectral_norm: bool = True


class _PatchDiscriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        wrap = nn.utils.parametrizations.spectral_norm if config.spectral_norm else (lambda module: module)
        layers: list[nn.Module] = []
        in_channels, channels = 3, config.base_channels
        for _ in range(config.num_layers):
            layers += [wrap(nn.Conv2d(in_channels, channels, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_channels, channels = channels, min(channels * 2, 8 * config.base_channels)
        layers += [wrap(nn.Conv2d(in_channels, in_channels, 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.to_logit = wrap(nn.Conv2d(in_channels, 1, 1))
        self.style_projection = wrap(nn.Linear(config.style_statistics_dim, in_channels))

    def forward(self, images: Tensor, style_statistics: Tensor) -> Tensor:
        features = self.features(images)  # (B, C, h, w)
        projection = self.style_projection(style_statistics)[:, :, None, None]
        return self.to_logit(features) + (features * projection).sum(1, keepdim=True)


class Discriminator(nn.Module):
    """`forward(images, style_statistics)` -> (B, P) logits for every patch of every scale."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        self.scales = nn.ModuleList([_PatchDiscriminator(config) for _ in range(config.num_scales)])

    def forward(self, images: Tensor, style_statistics: Tensor) -> Tensor:
        logits = []
        images = images * 2 - 1
        for index, scale in enumerate(self.scales):
            if index:
                images = F.avg_pool2d(images, 2)
            logits.append(scale(images, style_statistics).flatten(1))
        return torch.cat(logits, dim=1)
