"""VGG19 up to relu4_1 in int8, for reading a new style image's statistics on the CPU (~2× float32).

Post-training static quantisation (Jacob et al., 2018): weights in int8 per output channel
(symmetric), activations in quint8 per tensor with fixed scales, each convolution fused with its
ReLU. Activations use 7 bits (0-127): x86 CPUs without VNNI add pairs of u8 × s8 products in int16,
which full 8-bit activations can saturate (PyTorch's `reduce_range`).

The scales (`ACTIVATION_SCALES`) are VGG19's, not a model's: `calibrate_activation_scales` over the
171 training styles (`styles` + `styles_more` less the validation split) read at 256 px, with
PyTorch's histogram observer (the scale minimising the L2 quantisation error). On three training styles the per-channel means and stds that a style code reads moved by ≤ 1.7 %
(relu4_1; ≤ 0.3 % at relu1_1), and the validation scores by one pair of 128 (README, "Reading a new style
image"); see also `tests/stylegan/test_int8_features.py`.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.ao.quantization.observer import HistogramObserver

from .features import CAFFE_BGR_MEAN, LAYER_NAMES, POOLED_LAYERS, VGG19Features

DEEPEST = "relu4_1"
LAYERS = LAYER_NAMES[:LAYER_NAMES.index(DEEPEST) + 1]  # every ReLU output up to DEEPEST, in order
_LEVELS = 127  # 7-bit activations (see the module docstring)
# Caffe input (BGR 0-255 minus the mean pixel) spans [-123.68, 151.061]: its exact range, in 7 bits.
_INPUT_LOW, _INPUT_HIGH = -max(CAFFE_BGR_MEAN), 255.0 - min(CAFFE_BGR_MEAN)
# Per ReLU output, conv1_1 ... conv4_1 (`calibrate_activation_scales`, see the module docstring).
ACTIVATION_SCALES: tuple[float, ...] = (3.3612, 13.275, 18.6406, 27.6998, 33.6126, 37.772, 35.2518, 64.454, 89.81)


def int8_available() -> bool:
    """Whether this PyTorch has an x86 quantised-kernel engine (fbgemm) and the quantised ops that
    `Int8StyleFeatures` runs (PyTorch has announced their removal in a future release; torch is pinned)."""
    try:
        ops = (torch.quantize_per_channel, torch.ops.quantized.conv2d_prepack, torch.ops.quantized.conv2d_relu)
    except (AttributeError, RuntimeError):
        return False
    return all(map(callable, ops)) and bool({"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines))


@contextmanager
def _quantized_tensors_allowed() -> Iterator[None]:
    """Silence PyTorch's deprecation notice for quantised tensors (once per process, on our first use)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        yield


def can_read(layers: Iterable[str]) -> bool:
    """Whether `Int8StyleFeatures` can run here and give all of `layers`."""
    return int8_available() and set(layers) <= set(LAYERS)


@torch.inference_mode()
def calibrate_activation_scales(vgg: VGG19Features, images: Iterable[Tensor]) -> tuple[float, ...]:
    """Per ReLU output (relu1_1 ... relu4_1), the 7-bit scale that minimises the quantisation error over
    `images` ((1, 3, H, W) RGB in [0, 1] each): PyTorch's HistogramObserver over 7-bit levels."""
    observers = [HistogramObserver(quant_min=0, quant_max=_LEVELS) for _ in LAYERS]
    for image in images:
        for observer, activations in zip(observers, vgg(image, LAYERS).values()):  # in forward order
            observer(activations)
    return tuple(round(float(observer.calculate_qparams()[0]), 4) for observer in observers)


class Int8StyleFeatures:
    """`VGG19Features`' contract (RGB in [0, 1] -> named ReLU activations, float32) for layers up to relu4_1,
    computed in int8 on the CPU. Inference only."""

    def __init__(self, vgg: VGG19Features, scales: Sequence[float] = ACTIVATION_SCALES) -> None:
        if not int8_available():
            raise RuntimeError("this PyTorch has no x86 quantised engine; use VGG19Features")
        if len(scales) != len(LAYERS):
            raise ValueError(f"need {len(LAYERS)} activation scales (relu1_1 ... {DEEPEST}), got {len(scales)}")
        if torch.backends.quantized.engine not in ("x86", "fbgemm"):
            torch.backends.quantized.engine = "x86" if "x86" in torch.backends.quantized.supported_engines else "fbgemm"
        self.scales = tuple(float(scale) for scale in scales)
        self.to_caffe = vgg.to_caffe
        self._packed = []
        for name in LAYERS:
            conv = getattr(vgg, f"conv{name.removeprefix('relu')}")
            weight = conv.weight.detach().float().cpu()
            weight_scales = weight.abs().amax(dim=(1, 2, 3)).clamp_min(1e-8) / 127
            with _quantized_tensors_allowed():
                quantized = torch.quantize_per_channel(weight, weight_scales,
                                                       torch.zeros_like(weight_scales, dtype=torch.long), 0, torch.qint8)
            self._packed.append(torch.ops.quantized.conv2d_prepack(
                quantized, conv.bias.detach().float().cpu(), [1, 1], [1, 1], [1, 1], 1))

    @torch.inference_mode()
    def __call__(self, images: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        if not set(layers) <= set(LAYERS):  # (the engine was checked when the weights were packed)
            raise ValueError(f"int8 features stop at {DEEPEST}; asked for {sorted(layers)}")
        deepest = max(LAYERS.index(name) for name in layers)
        input_scale = (_INPUT_HIGH - _INPUT_LOW) / _LEVELS
        caffe = self.to_caffe(images.float().cpu()).contiguous(memory_format=torch.channels_last)
        with _quantized_tensors_allowed():
            x = torch.quantize_per_tensor(caffe, input_scale, round(-_INPUT_LOW / input_scale), torch.quint8)
        outputs: dict[str, Tensor] = {}
        for index, (name, packed, scale) in enumerate(zip(LAYERS, self._packed, self.scales)):
            x = torch.ops.quantized.conv2d_relu(x, packed, scale, 0)
            if name in layers:
                outputs[name] = x.dequantize()
            if index == deepest:
                break
            if name in POOLED_LAYERS:
                x = F.max_pool2d(x, 2, 2)
        return outputs
