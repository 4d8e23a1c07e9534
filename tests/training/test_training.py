"""Training: steps, the loop (resume, NaN guard, torchrun), data folders, config and export.

Everything runs the "tiny" preset on small generated images (see conftest.py) on the CPU.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from stylegan import Stylizer, losses
from stylegan.bands import BAND_LEVELS, band_signature, transfer_bands
from stylegan.discriminator import Discriminator
from stylegan.generator import Generator
from stylegan.images import luminance, resize_long_side, to_tensor
from stylegan.optimize import REFINE_STYLE_LAYERS, image_grams
from stylegan.palette import PALETTE_ITERATIONS, PALETTE_QUANTILES
from stylegan.presets import PRESET_GRAM_LONG_SIDE, Preset
from training.batches import StyleBank, build_style_bank, sample_batch, style_view
from training.checkpoint import list_checkpoints
from training.config import ADVERSARIAL_KINDS, PRESETS, TrainConfig, load_config
from training.data import hue_saturation_matrix, read_folder
from training.export import export_model
from training.model_card import TAGS, presets_table, write_model_card
from training.negatives import GramQueue
from training.steps import discriminator_step, generator_step, stylize_batch, training_step
from training.trainer import NonFiniteLossError, train

REPO_ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
EXPORT_FILES = {"config.json", "model.safetensors", "presets.json", "presets.safetensors", "palettes.safetensors",
                "bands.safetensors", "preset_grams", "README.md", "sample_grid.png", "losses.png", "training.json"}


def tiny(**changes) -> TrainConfig:
    # Probe grids are rendered at steps 0 and the last step anyway; more would only cost time.
    return dataclasses.replace(PRESETS["tiny"], **{"sample_every": 1000, **changes})


def run_training(config: TrainConfig, folders, run_dir: Path, vgg, **kwargs):
    return train(config, folders.content_dir, folders.style_dir, run_dir, vgg=vgg, progress=False, **kwargs)


@pytest.fixture(scope="module")
def data(image_folders, vgg):
    """(contents, style bank) as the trainer builds them, for driving the step functions directly."""
    config = tiny()
    contents = read_folder(image_folders.content_dir, round(config.content_long_side * (1 + config.scale_jitter)))
    styles = read_folder(image_folders.style_dir, config.style_long_side)
    return contents, build_style_bank(styles, vgg, config, CPU)


def make_models(config: TrainConfig):
    torch.manual_seed(0)
    generator, discriminator = Generator(config.generator), Discriminator(config.discriminator)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_lr, betas=config.betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_lr, betas=config.betas)
    return generator, discriminator, g_optimizer, d_optimizer


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.named_parameters()}


def changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, value in module.named_parameters() if not torch.equal(value, before[name])}


# -- steps ---------------------------------------------------------------------------------------
def test_one_discriminator_step_and_one_generator_step_change_their_networks(data, vgg):
    config = tiny()
    contents, bank = data
    generator, discriminator, g_optimizer, d_optimizer = make_models(config)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(0), CPU, vgg)
    batch = dataclasses.replace(batch, strength=torch.tensor([1.0, 0.0]))  # the style and the identity path
    g_before, d_before = parameters(generator), parameters(discriminator)

    d_result = discriminator_step(generator, discriminator, d_optimizer, batch, config, torch.Generator())
    assert changed(discriminator, d_before) == set(d_before)
    assert changed(generator, g_before) == set()

    d_before = parameters(discriminator)
    g_result = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert changed(discriminator, d_before) == set()
    # The style encoder and the identity code feed the zero-initialised `to_modulation`, so
    # their first gradient is exactly zero; everything else moves at once, they follow a step later.
    behind_zero_init = {name for name in g_before if name.startswith("style_encoder.") or name == "identity_code"}
    assert behind_zero_init
    assert changed(generator, g_before) == set(g_before) - behind_zero_init
    generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert changed(generator, g_before) == set(g_before)

    assert {"d_loss", "d_real", "d_fake"} <= set(d_result)
    assert {"content", "style", "g_adv", "identity", "g_total"} <= set(g_result)
    assert all(math.isfinite(value) for value in (d_result | g_result).values())


@pytest.mark.parametrize("kind", ["lsgan", "wgan-gp"])
def test_training_step_equals_a_discriminator_step_then_a_generator_step(kind, data, vgg):
    """Sharing the generator's forward between the two steps changes no value, to the bit."""
    config = tiny(adversarial_loss=kind)
    contents, bank = data
    separate, shared = make_models(config), make_models(config)
    separate_rng, shared_rng = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for step in range(3):
        batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(step), CPU, vgg)
        generator, discriminator, g_optimizer, d_optimizer = separate
        expected = discriminator_step(generator, discriminator, d_optimizer, batch, config, separate_rng)
        expected |= generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
        generator, discriminator, g_optimizer, d_optimizer = shared
        assert training_step(generator, discriminator, vgg, g_optimizer, d_optimizer, batch, config,
                             shared_rng) == expected
    for one, other in zip(separate[:2], shared[:2]):
        assert changed(other, parameters(one)) == set()


def test_a_few_dozen_generator_steps_on_one_batch_lower_its_loss(data, vgg):
    config = tiny()
    contents, bank = data
    generator, discriminator, g_optimizer, _ = make_models(config)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(5), CPU, vgg)
    losses = [generator_step(generator, discriminator, vgg, g_optimizer, batch, config)["g_total"]
              for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0], losses


def test_the_contrastive_style_term_enters_the_generator_loss(data, vgg):
    contents, bank = data
    batch = sample_batch(contents, bank, tiny(), torch.Generator().manual_seed(5), CPU, vgg)
    batch = dataclasses.replace(batch, strength=torch.ones(2))
    results = {}
    for weight in (0.0, 1.0):
        config = tiny(contrastive_weight=weight)
        generator, discriminator, g_optimizer, _ = make_models(config)
        results[weight] = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert results[0.0]["contrastive"] == 0
    assert results[1.0]["contrastive"] > 0
    assert results[1.0]["g_total"] == pytest.approx(results[0.0]["g_total"] + results[1.0]["contrastive"], rel=1e-5)
    with pytest.raises(ValueError, match="contrastive_layers"):
        tiny(contrastive_layers=("relu4_2",))


def test_a_contrastive_queue_adds_earlier_style_views_as_negatives(data, vgg):
    contents, bank = data
    config = tiny(contrastive_weight=1.0, contrastive_queue=8)
    first, second = (dataclasses.replace(sample_batch(contents, bank, config, torch.Generator().manual_seed(seed), CPU,
                                                      vgg), strength=torch.ones(2)) for seed in (5, 6))
    assert first.styles.shape == (2,) and all(-len(contents.images) <= s < len(bank.images) for s in first.styles)
    results = {}
    for name, queue in (("no queue", None), ("empty", GramQueue(8)), ("filled", GramQueue(8))):
        if name == "filled":
            queue.push({layer: first.target_grams[layer] for layer in config.contrastive_layers},
                       torch.tensor([100, 101]))  # other styles than the batch's
        generator, discriminator, g_optimizer, _ = make_models(config)
        results[name] = generator_step(generator, discriminator, vgg, g_optimizer, second, config, queue=queue)
        if queue is not None:
            assert len(queue) == min(8, 2 + (name == "filled") * 2)  # the batch's own views were added
    assert results["empty"]["contrastive"] == pytest.approx(results["no queue"]["contrastive"], rel=1e-6)
    assert results["filled"]["contrastive"] > results["empty"]["contrastive"]
    with pytest.raises(ValueError, match="contrastive_queue"):
        tiny(contrastive_queue=-1)


def test_style_layer_weights_reweight_the_style_term_and_are_checked(data, vgg):
    contents, bank = data
    batch = dataclasses.replace(sample_batch(contents, bank, tiny(), torch.Generator().manual_seed(5), CPU, vgg),
                                strength=torch.ones(2))
    layers = tiny().style_layers
    results = {}
    for weights in ((), (1.0,) * len(layers), (0.0,) * (len(layers) - 1) + (1.0,)):
        config = tiny(style_layer_weights=weights)
        generator, discriminator, g_optimizer, _ = make_models(config)
        results[weights] = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)["style"]
    uniform, equal, last_only = results.values()
    assert equal == pytest.approx(uniform, rel=1e-6)
    assert last_only != pytest.approx(uniform, rel=1e-3)
    for bad in ((1.0,), (-1.0,) + (1.0,) * (len(layers) - 1), (0.0,) * len(layers)):
        with pytest.raises(ValueError, match="style_layer_weights"):
            tiny(style_layer_weights=bad)


def test_the_network_contrast_floor_acts_on_the_networks_own_output_before_the_palette(data, vgg):
    contents, bank = data
    batch = sample_batch(contents, bank, tiny(), torch.Generator().manual_seed(5), CPU, vgg)
    batch = dataclasses.replace(batch, strength=torch.ones(2))
    # A floor above what any output keeps (3× the content's contrast), so the term is active from the start.
    config = tiny(network_contrast_weight=1.0, network_contrast_floor=3.0, content_weight=0.0, style_weight=0.0,
                  mean_std_weight=0.0, adversarial_weight=0.0, generator_lr=1e-2)
    generator, discriminator, g_optimizer, _ = make_models(config)
    with torch.no_grad():
        network, output = stylize_batch(generator, batch, config)
    assert not torch.equal(network, output)  # the palette moved it: the floor reads the network's own image
    first = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    expected = losses.contrast_floor_loss(network, batch.content, 3.0).item()
    assert first["network_flattening"] == pytest.approx(expected, rel=1e-4) and expected > 0
    for _ in range(10):
        last = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert last["network_flattening"] < first["network_flattening"]  # the network's contrast grew
    off = tiny(network_contrast_floor=3.0)
    generator, discriminator, g_optimizer, _ = make_models(off)
    assert generator_step(generator, discriminator, vgg, g_optimizer, batch, off)["network_flattening"] == 0


def test_bands_in_the_loss_give_the_losses_the_finished_image_and_train_through_it(data, vgg):
    contents, bank = data
    config = tiny(bands_in_loss=True, content_weight=0.0, mean_std_weight=0.0, adversarial_weight=0.0,
                  generator_lr=1e-2)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(6), CPU, vgg)
    assert batch.band_signatures.shape == (config.batch_size, BAND_LEVELS, band_signature(batch.content[:1]).shape[-1])
    strength = torch.ones(config.batch_size)
    strength[-1] = 0.0
    batch = dataclasses.replace(batch, strength=strength)
    generator, discriminator, g_optimizer, _ = make_models(config)
    with torch.no_grad():
        _, finished = stylize_batch(generator, batch, config)
        _, palette_only = stylize_batch(generator, batch, tiny())
    expected = transfer_bands(palette_only[:1], batch.band_signatures[0], 1.0)
    assert torch.allclose(finished[:1], expected, atol=1e-6)
    assert (finished[:1] - palette_only[:1]).abs().mean() > 1e-3  # the bands changed the styled sample
    assert torch.equal(finished[-1], palette_only[-1])  # strength 0: left as the palette step left it
    styled = dataclasses.replace(batch, strength=torch.ones(config.batch_size))  # no identity term: the style
    first = generator_step(generator, discriminator, vgg, g_optimizer, styled, config)  # loss is all there is
    for _ in range(10):
        last = generator_step(generator, discriminator, vgg, g_optimizer, styled, config)
    assert last["style"] < first["style"]  # so it falls only with its gradient through the band maps
    with pytest.raises(ValueError, match="bands_in_loss"):
        tiny(bands_in_loss=True, palette_in_loss=False)


def test_the_strength_linearity_term_shapes_the_networks_output_at_a_partial_strength(data, vgg):
    contents, bank = data
    config = tiny(strength_linearity_weight=1.0, content_weight=0.0, style_weight=0.0, mean_std_weight=0.0,
                  adversarial_weight=0.0, generator_lr=1e-2)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(5), CPU, vgg)
    assert batch.partial_strength.shape == (2,) and 0 < batch.partial_strength.min() <= batch.partial_strength.max() < 1
    batch = dataclasses.replace(batch, strength=torch.ones(2), partial_strength=torch.tensor([0.05, 0.1]))
    generator, discriminator, g_optimizer, _ = make_models(config)
    # A style code far from the identity, so the output at 5-10 % strength is far off the straight path.
    with torch.no_grad():
        generator.to_modulation.bias.normal_(0, 1, generator=torch.Generator().manual_seed(0))
        code = generator.encode_style(batch.style_statistics)
        full = generator(batch.content, code)
        partial = generator(batch.content, generator.blend(code, batch.partial_strength))
    expected = losses.strength_linearity_loss(partial, full, batch.content, batch.partial_strength).item()
    first = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert first["strength_linearity"] == pytest.approx(expected, rel=1e-4) and expected > 0
    for _ in range(10):
        last = generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert last["strength_linearity"] < 0.5 * first["strength_linearity"]
    assert sample_batch(contents, bank, tiny(), torch.Generator().manual_seed(5), CPU, vgg).partial_strength is None


def test_pale_styles_are_drawn_more_often_when_weighted(data, vgg):
    contents, _ = data
    greys = [torch.full((3, 32, 32), 128, dtype=torch.uint8) for _ in range(4)]
    for image, spread in zip(greys, (10, 40, 40, 80)):  # luminance stds about 0.02, 0.08, 0.08, 0.16
        image[:, ::2] += spread
    pale = StyleBank([Path(f"style_{index}.png") for index in range(4)], greys, torch.zeros(4, 1))
    weights = pale.sampling_weights(4.0)
    assert weights[0] == pytest.approx(1 + 4 * (1 - pale.contrast[0] / pale.contrast[1:3].mean()))
    assert weights[0] > 3.5 and torch.equal(weights[1:], torch.ones(3))
    assert torch.equal(pale.sampling_weights(0.0), torch.ones(4))

    def pale_share(config: TrainConfig) -> float:
        """Share of drawn style views that are the pale style (its crops' luminance std under 0.04)."""
        crops = torch.cat([sample_batch(contents, pale, config, torch.Generator().manual_seed(seed), CPU, vgg).style_crops
                           for seed in range(30)])
        return float((luminance(crops).flatten(1).std(1) < 0.04).float().mean())

    base = tiny(photo_style_probability=0.0, hue_rotation_probability=0.0, saturation_range=(1.0, 1.0))
    assert pale_share(base) < 0.4 < pale_share(dataclasses.replace(base, pale_style_weight=4.0))  # 1/4 -> 4/7


@pytest.mark.parametrize("kind", ADVERSARIAL_KINDS)
def test_every_adversarial_loss_runs_a_step(kind, data, vgg):
    config = tiny(adversarial_loss=kind)
    contents, bank = data
    generator, discriminator, g_optimizer, d_optimizer = make_models(config)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(1), CPU, vgg)
    d_before = parameters(discriminator)
    result = discriminator_step(generator, discriminator, d_optimizer, batch, config, torch.Generator().manual_seed(3))
    result |= generator_step(generator, discriminator, vgg, g_optimizer, batch, config)
    assert all(math.isfinite(value) for value in result.values()), result
    assert ("gradient_penalty" in result) == (kind == "wgan-gp")
    assert changed(discriminator, d_before)


# -- the loop ------------------------------------------------------------------------------------
def checkpoint_tensors(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    last = list_checkpoints(run_dir)[-1]
    return load_file(last / "state.safetensors"), json.loads((last / "meta.json").read_text())


def logged_steps(run_dir: Path) -> list[dict]:
    """metrics.jsonl without its timings: step number and losses."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key not in ("images_per_second", "wall_seconds")}
            for record in records]


@pytest.mark.slow
def test_resume_matches_an_uninterrupted_run(image_folders, vgg, tmp_path):
    config = tiny(steps=3, checkpoint_every=2, log_every=1)
    run_training(config, image_folders, tmp_path / "interrupted", vgg)
    longer = dataclasses.replace(config, steps=6)
    resumed = run_training(longer, image_folders, tmp_path / "interrupted", vgg, resume=True)
    straight = run_training(longer, image_folders, tmp_path / "straight", vgg)

    assert resumed.step == straight.step == 6
    # Resume continues from the checkpoint's step 3 (a restart from step 0 would log steps 1-3 twice), and
    # every resumed step has the uninterrupted run's losses: the same batch (data order) through the same
    # weights, moved by the same optimiser state.
    assert [record["step"] for record in logged_steps(tmp_path / "interrupted")] == [1, 2, 3, 4, 5, 6]
    assert logged_steps(tmp_path / "interrupted") == logged_steps(tmp_path / "straight")
    resumed_state, resumed_meta = checkpoint_tensors(tmp_path / "interrupted")
    straight_state, straight_meta = checkpoint_tensors(tmp_path / "straight")
    # G, D, EMA G, both optimizers' moments and step counts, and the RNG state.
    assert {key.split(".")[0] for key in straight_state} >= {"generator", "discriminator", "generator_ema",
                                                              "optimizer_generator", "optimizer_discriminator", "rng"}
    assert set(resumed_state) == set(straight_state)
    different = [key for key in straight_state if not torch.equal(resumed_state[key], straight_state[key])]
    assert different == []
    assert resumed_meta["step"] == straight_meta["step"] == 6
    assert resumed_meta["optimizers"] == straight_meta["optimizers"]
    for name, value in straight.export_generator.state_dict().items():
        assert torch.equal(resumed.export_generator.state_dict()[name], value), name


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(image_folders, vgg, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny(steps=2, checkpoint_every=1)
    run_training(config, image_folders, run_dir, vgg)
    # Resuming with an absurd learning rate (the config's rates apply on resume) blows up step 3.
    exploding = dataclasses.replace(config, steps=6, generator_lr=1e30, discriminator_lr=1e30)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 3") as failure:
        run_training(exploding, image_folders, run_dir, vgg, resume=True)
    message = str(failure.value)
    assert "step-0000002" in message and "learning rate" in message

    checkpoints = list_checkpoints(run_dir)
    assert [path.name for path in checkpoints] == ["step-0000001", "step-0000002"]
    state, meta = checkpoint_tensors(run_dir)
    assert meta["step"] == 2
    assert all(torch.isfinite(value).all() for key, value in state.items() if value.is_floating_point())
    # What the message advises works: resume from that checkpoint with a sane learning rate.
    recovered = run_training(dataclasses.replace(config, steps=4), image_folders, run_dir, vgg, resume=True)
    assert recovered.step == 4
    assert list_checkpoints(run_dir)[-1].name == "step-0000004"


def test_time_limit_stops_with_a_checkpoint_and_resume_continues(image_folders, vgg, tmp_path):
    config = tiny(steps=1000, log_every=1, checkpoint_every=1000)
    stopped = run_training(config, image_folders, tmp_path, vgg, time_limit=0.0)
    assert stopped.step == 1  # checked at every log step; the first one is over the limit
    assert [path.name for path in list_checkpoints(tmp_path)] == ["step-0000001"]
    resumed = run_training(dataclasses.replace(config, steps=3), image_folders, tmp_path, vgg, resume=True)
    assert resumed.step == 3


def test_init_from_starts_a_new_run_from_an_exported_model_and_the_card_says_so(image_folders, vgg, tmp_path):
    config = tiny(steps=2)
    first = run_training(config, image_folders, tmp_path / "first", vgg)
    export_dir = export_model(first, config, tmp_path / "first")
    exported = Generator.from_pretrained(export_dir, strict=True).state_dict()
    # Zero steps: the new run's EMA generator is exactly the exported one (standardisation included).
    started = run_training(tiny(steps=0), image_folders, tmp_path / "second", vgg, init_from=export_dir)
    for name, value in exported.items():
        assert torch.equal(started.export_generator.state_dict()[name], value), name
    fresh = run_training(tiny(steps=0), image_folders, tmp_path / "fresh", vgg)
    assert not torch.equal(fresh.export_generator.to_modulation.weight, exported["to_modulation.weight"])

    second_export = export_model(started, tiny(steps=0), tmp_path / "second")
    record = json.loads((second_export / "training.json").read_text())
    assert record["steps"] == 0 and record["initialized_from"]["steps"] == 2
    assert record["initialized_from"]["device"].startswith("CPU")
    card = (second_export / "README.md").read_text()
    assert "Started from `first/export`: 2 steps on 32-px crops, batch 2" in card
    # Resumed without --init-from (a new session), the run still knows what it started from.
    resumed = run_training(tiny(steps=1), image_folders, tmp_path / "second", vgg, resume=True)
    assert resumed.initialized_from == started.initialized_from and resumed.initialized_from["steps"] == 2
    assert "Trained from scratch" in (export_dir / "README.md").read_text()


def test_every_sample_reads_a_fresh_augmented_view_of_its_style(data, vgg):
    """Targets, code statistics, palette and D's real patches come from per-sample views that differ
    even for one style image, so no style has a fixed target to memorise."""
    contents, bank = data
    config = tiny(batch_size=16, photo_style_probability=0.0)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(3), CPU, vgg)
    assert batch.style_statistics.shape == (16, config.generator.style_statistics_dim)
    assert batch.palettes.shape[0] == 16 and batch.style_crops.shape == batch.content.shape
    assert len({tuple(row.tolist()) for row in batch.style_statistics}) == 16  # 3 styles, 16 different views
    assert set(batch.target_grams) == set(batch.target_moments) == set(config.style_layers)
    again = sample_batch(contents, bank, config, torch.Generator().manual_seed(3), CPU, vgg)
    assert torch.equal(again.style_statistics, batch.style_statistics)  # one generator, reproducible


def test_hue_rotation_keeps_grey_and_brightness_and_turns_colours():
    quarter = hue_saturation_matrix(torch.pi / 2, 1.0)
    grey = torch.tensor([0.3, 0.3, 0.3])
    assert torch.allclose(quarter @ grey, grey, atol=1e-6)
    red = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose((quarter @ red).sum(), red.sum(), atol=1e-6)  # mean brightness kept
    assert torch.allclose(hue_saturation_matrix(2 * torch.pi / 3, 1.0) @ red, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    assert torch.allclose(hue_saturation_matrix(0.0, 0.0) @ red, torch.full((3,), 1 / 3), atol=1e-6)
    image = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8)
    view = style_view(image, tiny(hue_rotation_probability=1.0), torch.Generator().manual_seed(0))
    assert view.shape == (3, tiny().style_view_size, tiny().style_view_size) and 0 <= view.min() <= view.max() <= 1



def test_a_faded_style_view_keeps_its_mean_colour_and_a_share_of_its_contrast_from_the_range():
    image = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8)
    plain = tiny(hue_rotation_probability=0.0, saturation_range=(1.0, 1.0))
    faded = dataclasses.replace(plain, fade_probability=1.0, fade_range=(0.2, 0.3))
    original = style_view(image, plain, torch.Generator().manual_seed(4))
    # the same crop and flip (fading draws after them), then moved towards the mean colour
    view = style_view(image, faded, torch.Generator().manual_seed(4))
    assert torch.allclose(view.mean((1, 2)), original.mean((1, 2)), atol=1e-5)
    kept = (view - view.mean((1, 2), keepdim=True)) / (original - original.mean((1, 2), keepdim=True))
    share = kept[(original - original.mean((1, 2), keepdim=True)).abs() > 0.05]
    assert torch.allclose(share, share[0].expand_as(share), atol=1e-4) and 0.2 <= float(share[0]) <= 0.3
    assert torch.equal(style_view(image, dataclasses.replace(faded, fade_probability=0.0),
                                  torch.Generator().manual_seed(4)), original)
    with pytest.raises(ValueError, match="fade_range"):
        dataclasses.replace(plain, fade_range=(0.0, 0.5))


def test_whole_style_codes_read_each_style_as_inference_does(data, vgg):
    contents, bank = data
    config = tiny(whole_style_code_probability=1.0, photo_style_probability=0.0, fade_probability=1.0)
    batch = sample_batch(contents, bank, config, torch.Generator().manual_seed(5), CPU, vgg)
    for row in batch.style_statistics:  # each sample's code input: one style's whole-image statistics
        assert any(torch.equal(row, whole) for whole in bank.full_statistics)
    views = sample_batch(contents, bank, tiny(photo_style_probability=0.0), torch.Generator().manual_seed(5), CPU, vgg)
    assert not any(torch.equal(row, whole) for row in views.style_statistics for whole in bank.full_statistics)


@pytest.mark.slow
def test_torchrun_two_processes_train_together_and_only_rank_0_writes(image_folders, tmp_path):
    config_file = tmp_path / "tiny.json"
    config_file.write_text(tiny(steps=3).to_json())
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "training", "--content-dir", str(image_folders.content_dir),
               "--style-dir", str(image_folders.style_dir), "--run-dir", str(run_dir), "--config", str(config_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    process = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
                             check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]

    assert process.stdout.count("exported to") == 1, process.stdout
    assert {path.name for path in (run_dir / "export").iterdir()} == EXPORT_FILES
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3]
    state, meta = checkpoint_tensors(run_dir)
    assert meta["extra"]["world_size"] == 2
    assert not torch.equal(state["rng.0"], state["rng.1"])  # each rank draws its own batches
    stylizer = Stylizer.from_pretrained(run_dir / "export", device="cpu")
    for name, value in stylizer.generator.state_dict().items():
        assert torch.equal(value, state[f"generator_ema.{name}"]), name


# -- data and config -----------------------------------------------------------------------------
def test_unreadable_files_are_skipped_with_a_warning_and_counted(image_folders, vgg, tmp_path):
    content_dir, style_dir = tmp_path / "content", tmp_path / "styles"
    content_dir.mkdir()
    for index in range(4):
        shutil.copyfile(image_folders.content_dir / f"content_{index}.png", content_dir / f"good_{index}.png")
    (content_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    (content_dir / "empty.jpg").write_bytes(b"")
    style_dir.mkdir()
    for path in sorted(image_folders.style_dir.iterdir())[:2]:
        shutil.copyfile(path, style_dir / path.name)
    (style_dir / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0")

    with pytest.warns(UserWarning, match="skipping") as warned:
        folder = read_folder(content_dir, 48)
    assert len(folder.images) == 4 and len(folder.skipped) == 2 and len(warned) == 2
    assert any("broken.png" in reason for reason in folder.skipped)
    assert any("empty.jpg" in reason and "empty" in reason for reason in folder.skipped)

    # In the loop: 3 of 6 contents are held out as probes; the unreadable ones never are.
    config = tiny(steps=1, num_probe_contents=3)
    with pytest.warns(UserWarning, match="skipping"):
        result = train(config, content_dir, style_dir, tmp_path / "run", vgg=vgg, progress=False)
    assert len(result.skipped) == 3
    assert sorted(Path(reason.split(":")[0]).name for reason in result.skipped) == [
        "broken.png", "empty.jpg", "truncated.jpg"]
    assert len(result.probe_contents) == 3
    assert all(path.name.startswith("good_") for path in result.probe_contents)


def test_load_config_reads_presets_and_json_and_rejects_bad_fields(tmp_path):
    assert load_config("tiny") == PRESETS["tiny"]
    assert load_config("tiny") is not PRESETS["tiny"]
    round_trip = tmp_path / "tiny.json"
    round_trip.write_text(PRESETS["tiny"].to_json())
    assert load_config(str(round_trip)) == PRESETS["tiny"]

    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"steps": 3, "learning_rate": 1e-3}))
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields: \['learning_rate'\]"):
        load_config(str(unknown))
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"generator": {"residual_blocks": 3}}))
    with pytest.raises(TypeError, match="residual_blocks"):
        load_config(str(nested))
    bad_kind = tmp_path / "bad_kind.json"
    bad_kind.write_text(json.dumps({"adversarial_loss": "vanilla"}))
    with pytest.raises(ValueError, match=r"adversarial_loss must be one of .*'vanilla'"):
        load_config(str(bad_kind))
    with pytest.raises(ValueError, match="neither a preset"):
        load_config(str(tmp_path / "missing.json"))


def test_every_config_file_in_the_repo_loads_with_each_of_its_keys_applied():
    files = sorted((REPO_ROOT / "training" / "configs").glob("*.json"))
    assert files
    for path in files:
        config, values = load_config(str(path)), json.loads(path.read_text())
        for key, value in values.items():  # nothing silently dropped or renamed
            assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value), (path.name, key)


# -- export --------------------------------------------------------------------------------------
def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


@pytest.mark.slow
def test_export_loads_strictly_with_equal_outputs_and_the_exact_file_set(image_folders, vgg, tmp_path):
    run_dir = tmp_path / "run"
    config = tiny(steps=4)
    result = run_training(config, image_folders, run_dir, vgg)
    export_dir = export_model(result, config, run_dir, sources=image_folders.sources, vgg=vgg)

    assert export_dir == run_dir / "export"
    assert {path.name for path in export_dir.iterdir()} == EXPORT_FILES
    assert sum(path.stat().st_size for path in export_dir.rglob("*")) < 2_000_000
    assert (export_dir / "sample_grid.png").read_bytes() == (run_dir / "samples" / "step-0000004.png").read_bytes()

    stylizer = Stylizer.from_pretrained(export_dir, device="cpu")
    ema = result.export_generator.eval()
    assert stylizer.generator.state_dict().keys() == ema.state_dict().keys()
    for name, value in ema.state_dict().items():
        assert torch.equal(stylizer.generator.state_dict()[name], value), name
    assert list(stylizer.presets) == ["ripples", "stripes", "waves"]
    waves = stylizer.presets["waves"]
    assert waves == Preset("waves", "Test Waves", "Generated Painter", "1901", "generated by tests/conftest.py", "CC0",
                           chroma=waves.chroma)
    assert 0 < waves.chroma < 1  # the style image's colourfulness, for the chroma limit
    assert stylizer._preset_palettes["waves"].shape == (PALETTE_ITERATIONS, 3, PALETTE_QUANTILES)
    waves_path = result.style_bank.paths[result.style_bank.names.index("waves")]
    assert torch.equal(stylizer._preset_bands["waves"], band_signature(to_tensor(Image.open(waves_path)))[0])
    # Best quality's targets: the Grams of the style image at the evaluation's scale, to bfloat16's rounding.
    waves_image = result.style_bank.images[result.style_bank.names.index("waves")]
    exact = image_grams(resize_long_side(waves_image[None].float() / 255, PRESET_GRAM_LONG_SIDE), vgg,
                        REFINE_STYLE_LAYERS)
    for layer, gram in stylizer.preset_grams("waves").items():
        assert torch.allclose(gram, exact[layer], rtol=2 ** -7, atol=1e-3 * float(exact[layer].abs().max())), layer
    content = torch.rand(1, 3, 36, 44, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_codes = ema.encode_style(result.style_bank.full_statistics)
        for index, name in enumerate(result.style_bank.names):
            code = stylizer.style_code(name)
            assert torch.equal(code, expected_codes[index])
            code = ema.blend(code[None], 0.7)
            # Same weights; only the float reduction order may differ between thread pools.
            assert torch.allclose(stylizer.generator(content, code), ema(content, code), rtol=0, atol=1e-6)

    card = (export_dir / "README.md").read_text()
    metadata = front_matter(card)
    assert metadata["license"] == "mit"
    assert metadata["library_name"] == "archive-style-gan"
    assert metadata["pipeline_tag"] == "image-to-image"
    assert set(TAGS) <= set(metadata["tags"])
    assert "datasets" not in metadata and "metrics" not in metadata  # none invented
    assert "Not evaluated yet" in card
    assert "| `waves` | Test Waves | Generated Painter | 1901 | generated by tests/conftest.py | CC0 |" in card
    prose = " ".join(card.split())
    assert "must not be presented" in prose and "The original scan is never altered" in prose
    assert "- Steps: 4" in card and '"crop_size": 32' in card
    assert "](sample_grid.png)" in card and "](losses.png)" in card

    # Once the run is evaluated, the next export carries the numbers.
    (run_dir / "evaluation.json").write_text(json.dumps({"gram_gain": 0.2812, "content_ssim": 0.5,
                                                         "per_style": {"waves": {"gram_gain": 0.31}}}))
    evaluated = front_matter_and_card(export_model(result, config, run_dir, out_dir=tmp_path / "evaluated"))
    assert evaluated[0]["metrics"] == ["gram_gain", "content_ssim"]
    assert "| gram_gain | 0.2812 |" in evaluated[1] and "| per_style / waves / gram_gain | 0.31 |" in evaluated[1]
    assert "Not evaluated yet" not in evaluated[1]
    # A `benchmarks.evaluate` report becomes a methods table, its per-pair lists stay out of the card.
    pair = {"content": "a", "style": "b", "gram_gain": 0.5, "ssim": 0.4}
    (run_dir / "evaluation.json").write_text(json.dumps({
        "system": {"cpu": "Test CPU", "threads": 2, "torch": "2.x"}, "metric_side": 512,
        "methods": {"ours": {"colour_distance": 0.03, "style_identified": 0.75, "gram_gain": 0.4, "ssim": 0.55,
                             "n_pairs": 1, "seconds_per_image": 0.3, "pairs": [pair]},
                    "peer arbitrary": {"gram_gain": 0.35, "ssim": 0.47, "n_pairs": 1, "seconds_per_image": 0.1,
                                       "pairs": [pair]}}}))
    reported = front_matter_and_card(export_model(result, config, run_dir, out_dir=tmp_path / "reported"))
    assert reported[0]["metrics"] == ["gram_gain", "ssim"]
    assert "| ours | 0.03 | 0.75 | 0.4 | 0.55 | 1 | 0.3 |" in reported[1]
    assert "| peer arbitrary | - | - | 0.35 | 0.47 | 1 | 0.1 |" in reported[1]  # older reports: no colour columns
    assert '"content": "a"' not in reported[1] and "Test CPU, 2 thread(s)" in reported[1]
    # Hub dataset ids appear only when given.
    write_model_card(tmp_path / "evaluated", result, config, run_dir, [], datasets=["archive-lab/scans"])
    assert front_matter_and_card(tmp_path / "evaluated")[0]["datasets"] == ["archive-lab/scans"]


def front_matter_and_card(export_dir: Path) -> tuple[dict, str]:
    card = (export_dir / "README.md").read_text()
    return front_matter(card), card


def test_presets_table_escapes_table_syntax():
    table = presets_table([Preset("a", "Left | Right", "Someone", "1900", "line one\nline two", "CC0")])
    assert "Left \\| Right" in table and "line one line two" in table
    assert table.splitlines()[-1].count(" | ") == 5
