"""Arbitrary-style generator: encoder -> style-modulated residual blocks -> resize-conv decoder.

Johnson et al.'s (2016) encoder/residual/decoder generator, made arbitrary-style the
way conditional instance norm / AdaIN do it (Dumoulin et al., 2017; Ghiasi et al., 2017;
Huang & Belongie, 2017): a style image becomes a compact *style code* (an MLP over per-channel
mean and std of its VGG19 activations), and the code sets the scale and shift of every
instance norm after the encoder. Style strength interpolates codes between a learned
identity code (trained to reproduce the content) and the style's code, so intermediate
strengths blend normalisation statistics, not pixels.

The output is the content in logit space, through a style-dependent 3×3 colour transform,
plus a decoded residual: `sigmoid(A·logit(content) + b + residual)`. The skip keeps the
content's detail available at every strength; the colour transform lets a style recolour the
whole image (a grayscale engraving, a sepia print) without fighting that skip.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from .features import STYLE_LAYERS, VGG_CHANNELS

NORM_EPS = 1e-5
MIN_SIDE = 8  # reflection padding at 1/4 resolution needs 2 px
# One (mean, var) pair of shape (B, C, 1, 1) per normalisation layer, in forward order.
NormStats = list[tuple[Tensor, Tensor]]


@dataclass
class GeneratorConfig:
    encoder_channels: tuple[int, int, int] = (16, 32, 64)  # at full, 1/2 and 1/4 resolution
    num_residual_blocks: int = 5
    separable: bool = True  # depthwise-separable convs in the residual blocks (CPU budget)
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_dim: int = 128
    style_hidden_dim: int = 256
    style_image_size: int = 256  # long side at which a style image is read for its code

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists.
        self.encoder_channels = tuple(self.encoder_channels)
        self.style_layers = tuple(self.style_layers)
        if len(self.encoder_channels) != 3:
            raise ValueError(f"encoder_channels needs 3 widths, got {self.encoder_channels}")
        unknown = set(self.style_layers) - set(VGG_CHANNELS)
        if unknown:
            raise ValueError(f"style_layers {sorted(unknown)} not in {sorted(VGG_CHANNELS)}")

    @property
    def style_statistics_dim(self) -> int:
        return 2 * sum(VGG_CHANNELS[name] for name in self.style_layers)


def channel_moments(features: dict[str, Tensor], layers: tuple[str, ...]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per layer, the per-channel (mean, std) of (B, C, H, W) activations, each (B, C)."""
    moments = {}
    for name in layers:
        activations = features[name].flatten(2)
        std, mean = torch.std_mean(activations, dim=-1)
        moments[name] = (mean, std)
    return moments


def style_statistics(features: dict[str, Tensor], layers: tuple[str, ...],
                     moments: dict[str, tuple[Tensor, Tensor]] | None = None) -> Tensor:
    """(B, 2·ΣC): per-channel log1p(mean) and log1p(std) of each layer's ReLU activations
    (`moments`, from `channel_moments`, when already computed)."""
    moments = moments or channel_moments(features, layers)
    return torch.log1p(torch.cat([part for name in layers for part in moments[name]], dim=1))


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel_size // 2),
                         nn.Conv2d(in_channels, out_channels, kernel_size, stride))


# Nearest 2× upsampling then a 3×3 convolution, as one stride-2 transposed convolution: output row
# 2i reads input rows i-1 (kernel row 0) and i (rows 1+2); row 2i+1 reads rows i (rows 0+1) and
# i+1 (row 2). Row k of this matrix says which 3×3 kernel rows sum into the 4-tap kernel's row k.
_UPSAMPLE_TAPS = ((0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0))


def upsample_conv(x: Tensor, conv: nn.Sequential) -> Tensor:
    """`conv` (reflection pad 1, 3×3) applied to `x` upsampled 2× (nearest), without the upsampled copy.

    Equal to `conv(F.interpolate(x, scale_factor=2, mode="nearest"))` up to rounding, with 4/9 of
    the multiply-adds: each output pixel sums 2×2 input pixels, not 3×3 repeated ones. Reflecting
    the upsampled border equals replicating the input's border.
    """
    weight, bias = conv[1].weight, conv[1].bias
    taps = torch.tensor(_UPSAMPLE_TAPS, dtype=weight.dtype, device=weight.device)
    kernel = torch.einsum("ku,oiuv,lv->iokl", taps, weight, taps)  # (in, out, 4, 4)
    return F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias, stride=2, padding=3)


def _separable_conv(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, groups=channels),
                         nn.Conv2d(channels, channels, 1))


class Generator(nn.Module, PyTorchModelHubMixin,
                library_name="archive-style-gan",
                tags=["style-transfer", "image-to-image", "gan", "archives"],
                license="mit"):
    """`forward(content, modulation)` with content (B, 3, H, W) in [0, 1], H and W multiples of 4."""

    def __init__(self, config: GeneratorConfig | dict | None = None) -> None:
        super().__init__()
        if isinstance(config, dict):  # from config.json (PyTorchModelHubMixin passes the dict)
            config = GeneratorConfig(**config)
        self.config = config = config or GeneratorConfig()
        c1, c2, c3 = config.encoder_channels
        self.encoder = nn.ModuleList([_conv(3, c1), _conv(c1, c2, stride=2), _conv(c2, c3, stride=2)])
        self.encoder_norms = nn.ModuleList([nn.InstanceNorm2d(c, affine=True) for c in (c1, c2, c3)])
        make_conv = _separable_conv if config.separable else (lambda c: _conv(c, c))
        self.residual_convs = nn.ModuleList(
            [make_conv(c3) for _ in range(2 * config.num_residual_blocks)])
        self.decoder = nn.ModuleList([_conv(c3, c2), _conv(c2, c1)])
        self.to_residual = _conv(c1, 3)
        # Channels of each style-modulated norm, in forward order: residual blocks then decoder.
        self.modulated_channels = [c3] * (2 * config.num_residual_blocks) + [c2, c1]
        self.style_encoder = nn.Sequential(
            nn.Linear(config.style_statistics_dim, config.style_hidden_dim), nn.ReLU(),
            nn.Linear(config.style_hidden_dim, config.style_dim))
        # Standardisation of the style statistics (set from the training styles): the styles'
        # shared component would otherwise swamp the differences between them.
        self.register_buffer("style_statistics_mean", torch.zeros(config.style_statistics_dim))
        self.register_buffer("style_statistics_std", torch.ones(config.style_statistics_dim))
        self.identity_code = nn.Parameter(torch.zeros(config.style_dim))
        self.to_modulation = nn.Linear(config.style_dim, 2 * sum(self.modulated_channels))
        self.to_color = nn.Linear(config.style_dim, 12)  # 3×3 matrix (as a change from I) + bias
        for layer in (self.to_modulation, self.to_color):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # -- style codes -------------------------------------------------------------------------
    def standardize_style(self, statistics: Tensor) -> Tensor:
        """Statistics from `style_statistics` -> z-scores over the training styles, clipped to ±5
        so an unusual (unseen) style image cannot push the code far outside what was trained."""
        return ((statistics - self.style_statistics_mean) / self.style_statistics_std).clamp(-5, 5)

    def set_style_standardization(self, statistics: Tensor) -> None:
        """Fit the standardisation to (N, style_statistics_dim) statistics of the training styles.

        The std floor (0.1 in log1p units) keeps near-constant channels (e.g. ReLUs that are
        almost never active) from turning tiny differences into huge z-scores."""
        self.style_statistics_mean.copy_(statistics.mean(0))
        self.style_statistics_std.copy_(statistics.std(0).clamp_min(0.1))

    def encode_style(self, statistics: Tensor) -> Tensor:
        """(B, style_statistics_dim) from `style_statistics` -> (B, style_dim) style codes."""
        return self.style_encoder(self.standardize_style(statistics))

    def blend(self, style_code: Tensor, strength: float | Tensor) -> Tensor:
        """Code at `strength` ∈ [0, 1] between the identity code (0) and `style_code` (1)."""
        strength = torch.as_tensor(strength, dtype=style_code.dtype, device=style_code.device)
        if strength.ndim == 1:
            strength = strength[:, None]
        return self.identity_code + strength * (style_code - self.identity_code)

    @torch.no_grad()
    def scale_style_codes(self, scale: float) -> None:
        """Make every style code `scale` of the way from the identity code, as if blended at `scale`:
        `encode_style` then returns identity + scale·(code − identity), an exact edit of the style
        encoder's last layer (W → scale·W, b → scale·b + (1 − scale)·identity). Strength 0 is unchanged.
        For a model whose network overshoots its styles (chosen on validation: see README)."""
        if not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        last = self.style_encoder[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale).add_((1 - scale) * self.identity_code)

    # -- image path --------------------------------------------------------------------------
    def forward(self, content: Tensor, code: Tensor, norm_stats: NormStats | None = None) -> Tensor:
        """Stylise `content` with blended `code` (B or 1, style_dim) -> (B, 3, H, W) in (0, 1).

        `norm_stats` (from `measure_norm_stats`) replaces the per-image instance-norm
        statistics, so tiles of one large image are all normalised like the whole image.
        """
        return self._run(content, code, norm_stats, record=None)

    def measure_norm_stats(self, content: Tensor, code: Tensor) -> NormStats:
        """Instance-norm statistics of every normalisation layer for `content`."""
        record: NormStats = []
        self._run(content, code, None, record)
        return record

    def _run(self, content: Tensor, code: Tensor, norm_stats: NormStats | None,
             record: NormStats | None) -> Tensor:
        height, width = content.shape[-2:]
        if height % 4 or width % 4 or min(height, width) < MIN_SIDE:
            raise ValueError(f"height and width must be multiples of 4 and at least {MIN_SIDE}, "
                             f"got {(height, width)}")
        stats_index = iter(range(len(self.modulated_channels) + len(self.encoder_norms)))

        def normalize(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
            """Instance norm with per-sample (B, C) scale and shift, as one fused x·a + b."""
            index = next(stats_index)
            if norm_stats is None and record is None and x.shape[0] == 1:
                # One image: instance norm is group norm with a group per channel, whose fused
                # CPU kernel (one pass for the statistics, one for x·a + b) is 4-8× faster here.
                return F.group_norm(x, x.shape[1], scale[0].to(x.dtype), shift[0].to(x.dtype), NORM_EPS)
            if norm_stats is not None:
                mean, var = norm_stats[index]
            else:  # E[x²] - E[x]² is several times faster than var_mean on the CPU; in float32,
                # since in half precision the difference cancels catastrophically
                wide = x.float()
                mean = wide.mean((2, 3), keepdim=True)
                var = ((wide * wide).mean((2, 3), keepdim=True) - mean * mean).clamp_min(0)
            if record is not None:
                record.append((mean.detach(), var.detach()))
            a = torch.rsqrt(var + NORM_EPS) * scale[:, :, None, None]
            return torch.addcmul(shift[:, :, None, None] - mean * a, x, a).to(x.dtype)

        x = content
        for conv, norm in zip(self.encoder, self.encoder_norms):
            x = F.relu(normalize(conv(x), norm.weight[None], norm.bias[None]), inplace=True)
        scales_and_shifts = self.to_modulation(code).split(
            [c for c in self.modulated_channels for _ in range(2)], dim=1)
        modulation = iter(zip(scales_and_shifts[0::2], scales_and_shifts[1::2]))

        def modulate(x: Tensor) -> Tensor:
            scale, shift = next(modulation)
            return normalize(x, 1 + scale, shift)

        convs = iter(self.residual_convs)
        for _ in range(self.config.num_residual_blocks):
            h = F.relu(modulate(next(convs)(x)), inplace=True)
            x = x + modulate(next(convs)(h))
        for conv in self.decoder:
            x = F.relu(modulate(upsample_conv(x, conv)), inplace=True)
        # Bounded (tanh) so a style can recolour but never invert or saturate: |ΔA| < ½, |b| < 1.
        color = torch.tanh(self.to_color(code))
        matrix = 0.5 * color[:, :9].view(-1, 3, 3) + torch.eye(3, dtype=color.dtype, device=color.device)
        skip = torch.einsum("bij,bjhw->bihw", matrix, torch.logit(content.clamp(1e-3, 1 - 1e-3)))
        return torch.sigmoid(skip + color[:, 9:, None, None] + self.to_residual(x))
