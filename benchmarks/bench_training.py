"""Training speed: images/s and where a step's time goes, our loop against a straightforward one.

    .venv/bin/python -m benchmarks.bench_training                   # the config's crops and batch, 3 timed steps each
    .venv/bin/python -m benchmarks.bench_training --quick           # 64² crops, batch 2: a smoke run (minutes)
    .venv/bin/python -m benchmarks.bench_training --ablation        # + ours without the step tweaks
    .venv/bin/python -m benchmarks.bench_training --device cuda --batch-size 16 --steps 20

The loops run in this one process, one step each in turn (so background load hits all alike),
from the same initial weights, on the same data, with the real `training.steps` functions:

Every loop samples its batch with the trainer's `sample_batch`: a fresh augmented view of each
sample's style, sent through VGG19 for its Gram targets, moments and statistics (so there is
nothing to cache across steps).

  ours             the trainer's step: one generator forward shared by `discriminator_step` and
                   `generator_step` (as `training_step` does), one VGG19 pass over the stylised batch
                   for content and style losses, VGG19 in channels-last layout (`prepare_loss_network`)
                   for the losses and the style views, EMA update
  straightforward  the same step without those: the D step runs its own generator forward, the
                   generator step runs separate VGG19 passes for the content and style losses, and
                   VGG19 runs in the default layout
  ours, untuned    (--ablation) ours with the D step's own generator forward and VGG19 in the default
                   layout: the trainer before `training_step` and `prepare_loss_network`

Before timing, the loops take two steps on the same fixed-seed batches from the same weights,
and the benchmark fails unless every loss of ours and of the straightforward loop (on ours'
VGG19 layout for this check) agrees to 1e-4 (relative): the shared VGG19 pass and the shared
generator forward change no value. How far the channels-last layout alone moves the losses (float
rounding) is reported beside it. The breakdown times each module's forward calls and marks, with gradient hooks and
optimizer hooks, when the backward pass reaches each network (synchronising CUDA at every mark).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.common import DEFAULT_DATA, image_files, markdown_table, publish, synthetic_image, system_info
from stylegan.discriminator import Discriminator
from stylegan.features import VGG19Features
from stylegan.generator import Generator
from training.batches import Batch, StyleBank, build_style_bank, sample_batch
from training.config import PRESETS, TrainConfig, load_config
from training.data import Folder, read_folder
from training.steps import autocast, discriminator_step, generator_step, stylize_batch
from training.trainer import prepare_loss_network, update_ema

LOSS_RTOL = 1e-4


# -- timing instruments ------------------------------------------------------------------------------
class StepClock:
    """Wall-clock sections and marks within one training step; CUDA is synchronised before every reading."""

    def __init__(self, device: torch.device) -> None:
        self.synchronize = torch.cuda.synchronize if device.type == "cuda" else None
        self.phase = ""  # "d" or "g": which step function is running
        self.durations: dict[str, float] = defaultdict(float)
        self.marks: dict[str, list[float]] = defaultdict(list)

    def now(self) -> float:
        if self.synchronize:
            self.synchronize()
        return time.perf_counter()

    def mark(self, name: str) -> None:
        self.marks[f"{self.phase}:{name}"].append(self.now())

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = self.now()
        yield
        self.durations[name] += self.now() - start

    def reset(self) -> None:
        self.durations.clear()
        self.marks.clear()


class Timed(nn.Module):
    """Calls `module(images, ...)`, timing the forward and marking when the backward pass reaches
    its output and its input. Exposes the wrapped network as `.module`, as DDP does, so
    `training.steps.unwrap` finds the generator's own methods."""

    def __init__(self, module: nn.Module, name: str, clock: StepClock) -> None:
        super().__init__()
        self.module, self.name, self.clock = module, name, clock

    def forward(self, images: Tensor, *args: object) -> object:
        clock = self.clock
        if images.requires_grad:
            images.register_hook(lambda grad: clock.mark(f"{self.name} input grad"))
        with clock.section(f"{clock.phase}:{self.name} forward"):
            output = self.module(images, *args)
        first = next(iter(output.values())) if isinstance(output, dict) else output
        if first.requires_grad:
            first.register_hook(lambda grad: clock.mark(f"{self.name} output grad"))
        return output


def time_optimizer(optimizer: torch.optim.Optimizer, name: str, clock: StepClock) -> None:
    optimizer.register_step_pre_hook(lambda *_: clock.mark(f"{name} step start"))
    optimizer.register_step_post_hook(lambda *_: clock.mark(f"{name} step end"))


class SeparateVGGPasses(nn.Module):
    """The loss network called once per loss: the content layer and the style layers in separate passes."""

    def __init__(self, vgg: VGG19Features, content_layer: str) -> None:
        super().__init__()
        self.vgg, self.content_layer = vgg, content_layer

    def forward(self, images: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        others = tuple(name for name in layers if name != self.content_layer)
        groups = ([(self.content_layer,)] if self.content_layer in layers else []) + ([others] if others else [])
        features: dict[str, Tensor] = {}
        for group in groups:
            features.update(self.vgg(images, group))
        return features


# -- the loops ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Variant:
    """What a loop does: one generator forward for both steps; channels-last VGG19; one VGG19 pass for all
    losses (else a pass per loss)."""
    shared_forward: bool
    tuned_vgg: bool
    one_loss_pass: bool


VARIANTS = {
    "ours": Variant(shared_forward=True, tuned_vgg=True, one_loss_pass=True),
    # `--ablation`: the trainer before `training_step` and `prepare_loss_network` (one VGG19 pass, default layout)
    "ours, untuned": Variant(shared_forward=False, tuned_vgg=False, one_loss_pass=True),
    "straightforward": Variant(shared_forward=False, tuned_vgg=False, one_loss_pass=False),
}


@dataclasses.dataclass
class Loop:
    """One training loop's state: wrapped networks (`vgg` for the losses, `view_vgg` for the style views
    inside data sampling), optimizers, EMA, its own RNG and clock."""
    name: str
    variant: Variant
    generator: Timed
    discriminator: Timed
    vgg: Timed
    view_vgg: VGG19Features
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    ema: Generator
    rng: torch.Generator
    clock: StepClock


def make_loop(name: str, initial: tuple[Generator, Discriminator], networks: dict[str, VGG19Features],
              config: TrainConfig, device: torch.device) -> Loop:
    """Fresh copies of the initial networks and optimizers, as `training.trainer.train` builds them.
    `networks`: the VGG19 in the default layout ("plain") and as the trainer prepares it ("tuned")."""
    variant = VARIANTS[name]
    view_vgg = networks["tuned"] if variant.tuned_vgg else networks["plain"]
    vgg: nn.Module = view_vgg if variant.one_loss_pass else SeparateVGGPasses(view_vgg, config.content_layer)
    generator, discriminator = (copy.deepcopy(module) for module in initial)
    clock = StepClock(device)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_lr, betas=config.betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_lr, betas=config.betas)
    time_optimizer(g_optimizer, "G optimizer", clock)
    time_optimizer(d_optimizer, "D optimizer", clock)
    return Loop(name, variant, Timed(generator, "generator", clock), Timed(discriminator, "discriminator", clock),
                Timed(vgg, "vgg", clock), view_vgg, g_optimizer, d_optimizer,
                copy.deepcopy(generator).requires_grad_(False), torch.Generator().manual_seed(config.seed), clock)


def train_step(loop: Loop, batch: Batch, config: TrainConfig) -> dict[str, float]:
    """The body of `training.trainer.train`'s loop, given the batch. With a shared forward, the D and
    G steps use one generator forward as `training.steps.training_step` does (counted in the G step)."""
    stylized = None
    if loop.variant.shared_forward:
        loop.clock.phase = "g"
        with loop.clock.section("G step"), autocast(config, batch.content.device):
            stylized = stylize_batch(loop.generator, batch, config)
    loop.clock.phase = "d"
    with loop.clock.section("D step"):
        result = discriminator_step(loop.generator, loop.discriminator, loop.d_optimizer, batch, config, loop.rng,
                                    stylized)
    loop.clock.phase = "g"
    with loop.clock.section("G step"):
        result |= generator_step(loop.generator, loop.discriminator, loop.vgg, loop.g_optimizer, batch, config,
                                 stylized)
    loop.clock.phase = ""
    with loop.clock.section("EMA update"):
        update_ema(loop.ema, loop.generator.module, config.ema_decay)
    return result


def loop_step(loop: Loop, contents: Folder, bank: StyleBank, config: TrainConfig,
              device: torch.device) -> dict[str, float]:
    """One whole step: a batch (style views through the loop's VGG19), D, G, EMA."""
    with loop.clock.section("data sampling"):
        batch = sample_batch(contents, bank, config, loop.rng, device, loop.view_vgg)
    return train_step(loop, batch, config)


# -- the breakdown ---------------------------------------------------------------------------------------
SECTIONS = (
    "data sampling",
    "D step: G forward (no grad; ours shares the G step's)", "D step: D forward (real + fake)", "D step: D backward", "D step: Adam",
    "D step: rest (losses, .item())",
    "G step: G forward", "G step: VGG forward (content + stylised)", "G step: D forward",
    "G step: D backward", "G step: VGG backward (+ loss terms)", "G step: G backward", "G step: Adam",
    "G step: rest (losses, .item())",
    "EMA update",
)


def breakdown(clock: StepClock) -> dict[str, float]:
    """Seconds per section of the step just run. The backward pass runs D's part first (its nodes
    are the newest), then VGG's, then G's: the hooks' marks split it at those boundaries."""
    durations, marks = clock.durations, clock.marks
    d_backward_start = min(marks["d:discriminator output grad"])
    parts = {
        "data sampling": durations["data sampling"],
        "D step: G forward (no grad; ours shares the G step's)": durations["d:generator forward"],
        "D step: D forward (real + fake)": durations["d:discriminator forward"],
        "D step: D backward": marks["d:D optimizer step start"][0] - d_backward_start,
        "D step: Adam": marks["d:D optimizer step end"][0] - marks["d:D optimizer step start"][0],
        "G step: G forward": durations["g:generator forward"],
        "G step: VGG forward (content + stylised)": durations["g:vgg forward"],
        "G step: D forward": durations["g:discriminator forward"],
        "G step: D backward": marks["g:discriminator input grad"][0] - marks["g:discriminator output grad"][0],
        "G step: VGG backward (+ loss terms)": marks["g:generator output grad"][0]
        - marks["g:discriminator input grad"][0],
        "G step: G backward": marks["g:G optimizer step start"][0] - marks["g:generator output grad"][0],
        "G step: Adam": marks["g:G optimizer step end"][0] - marks["g:G optimizer step start"][0],
        "EMA update": durations["EMA update"],
    }
    parts["D step: rest (losses, .item())"] = durations["D step"] - sum(
        value for key, value in parts.items() if key.startswith("D step:"))
    parts["G step: rest (losses, .item())"] = durations["G step"] - sum(
        value for key, value in parts.items() if key.startswith("G step:"))
    negative = {key: value for key, value in parts.items() if value < 0}
    if negative:
        raise RuntimeError(f"the backward pass did not run in the expected order (D, VGG, G): {negative}")
    return {name: parts[name] for name in SECTIONS}


# -- equality check ---------------------------------------------------------------------------------------
def relative_error(actual: float, expected: float) -> float:
    return abs(actual - expected) / max(abs(expected), 1e-12)


def check_equal_losses(initial: tuple[Generator, Discriminator], networks: dict[str, VGG19Features],
                       contents: Folder, bank: StyleBank, config: TrainConfig, device: torch.device,
                       steps: int = 2) -> dict[str, float]:
    """Two steps of the loops on the same fixed-seed batches. The straightforward loop runs on ours'
    VGG19 layout here, so only sharing tells them apart, and its separate passes and second generator
    forward must give ours' values. The layout's own effect (float rounding) is measured against
    "ours, untuned" and reported, not asserted."""
    tuned = networks["tuned"]
    ours = make_loop("ours", initial, networks, config, device)
    plain = make_loop("straightforward", initial, {"plain": tuned, "tuned": tuned}, config, device)
    untuned = make_loop("ours, untuned", initial, networks, config, device)
    sampling_rng = torch.Generator().manual_seed(config.seed + 7)
    worst = {"losses": 0.0, "layout": 0.0}
    for step in range(steps):
        batch = sample_batch(contents, bank, config, sampling_rng, device, tuned)
        ours_losses = train_step(ours, batch, config)
        plain_losses, untuned_losses = train_step(plain, batch, config), train_step(untuned, batch, config)
        for name, value in ours_losses.items():
            error = relative_error(plain_losses[name], value)
            if error > LOSS_RTOL:
                raise SystemExit(f"step {step + 1}: loss {name!r} differs between the loops: ours {value!r}, "
                                 f"straightforward {plain_losses[name]!r}")
            worst["losses"] = max(worst["losses"], error)
            worst["layout"] = max(worst["layout"], relative_error(untuned_losses[name], value))
    return worst


# -- setup and report ---------------------------------------------------------------------------------------
def read_data(data: Path, config: TrainConfig, max_images: int, scratch: Path) -> tuple[Folder, Folder]:
    """Contents and styles from the corpus (the first `max_images` of each), or synthetic images."""
    folders = []
    for kind, long_side in (("content", round(config.content_long_side * (1 + config.scale_jitter))),
                            ("styles", config.style_long_side)):
        paths = image_files(data / kind)[:max_images]
        if not paths:
            for index in range(max_images):
                path = scratch / kind / f"synthetic-{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                synthetic_image(long_side, long_side * 3 // 4, seed=index + (100 if kind == "styles" else 0)).save(path)
                paths.append(path)
        folders.append(read_folder(paths[0].parent, long_side, paths))
    return folders[0], folders[1]


def run(args: argparse.Namespace) -> dict[str, object]:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = load_config(args.config)
    config = dataclasses.replace(config, crop_size=args.crop_size, batch_size=args.batch_size, **args.overrides)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as scratch:
        contents, styles = read_data(args.data, config, args.max_images, Path(scratch))
    networks = {"plain": VGG19Features.pretrained().to(device),
                "tuned": prepare_loss_network(VGG19Features.pretrained(), device)}  # as the trainer prepares it
    torch.manual_seed(config.seed)
    initial = (Generator(config.generator).to(device), Discriminator(config.discriminator).to(device))
    started = time.perf_counter()
    bank = build_style_bank(styles, networks["tuned"], config, device)
    bank_seconds = time.perf_counter() - started
    initial[0].set_style_standardization(bank.full_statistics)  # as the trainer does
    print(f"  style bank of {len(styles.images)} styles built in {bank_seconds:.1f} s; checking losses ...",
          file=sys.stderr, flush=True)
    check = check_equal_losses(initial, networks, contents, bank, config, device)

    names = [name for name in VARIANTS if args.ablation or name != "ours, untuned"]
    loops = {name: make_loop(name, initial, networks, config, device) for name in names}
    steps: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index in range(args.warmup + args.steps):
        for name, loop in loops.items():
            loop.clock.reset()
            with loop.clock.section("step"):
                loop_step(loop, contents, bank, config, device)
            timed = index >= args.warmup
            print(f"  {name} step {index + 1}{'' if timed else ' (warm-up)'}: "
                  f"{loop.clock.durations['step']:.2f} s", file=sys.stderr, flush=True)
            if timed:
                steps[name].append({"step": loop.clock.durations["step"], **breakdown(loop.clock)})
    return {"system": system_info(args.threads), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "config": {"crop_size": config.crop_size, "batch_size": config.batch_size,
                       "style_long_side": config.style_long_side, "content_long_side": config.content_long_side,
                       "adversarial_loss": config.adversarial_loss,
                       "mixed_precision": config.mixed_precision and device.type == "cuda"},
            "contents": len(contents.images), "styles": len(styles.images), "warmup": args.warmup,
            "style_bank_seconds": bank_seconds, "equality_check": check, "steps": steps}


def format_report(report: dict[str, object]) -> str:
    steps: dict[str, list[dict[str, float]]] = report["steps"]  # type: ignore[assignment]
    config: dict = report["config"]  # type: ignore[assignment]
    batch = config["batch_size"]

    def per_step(name: str, key: str) -> float:
        return statistics.median(entry[key] for entry in steps[name])

    names = list(steps)
    step_time = {name: per_step(name, "step") for name in names}
    rows = []
    for section in SECTIONS:
        row: list[object] = [section]
        for name in names:
            value = per_step(name, section)
            row += [value, f"{100 * value / step_time[name]:.0f}%"]
        rows.append(row)
    rows.append(["**whole step**"] + [cell for name in names for cell in (step_time[name], "100%")])
    system, check = report["system"], report["equality_check"]
    device = report["gpu"] or f"{system['cpu']} ({system['cpu_count']} cores), {system['threads']} thread(s)"
    speed = {name: batch / step_time[name] for name in names}
    ratios = [[f"ours / {name}", f"{speed['ours'] / speed[name]:.2f}× as fast"] for name in names if name != "ours"]
    return "\n".join([
        (f"{device}; torch {system['torch']}; {config['crop_size']}² crops, batch {batch}, "
         f"{report['contents']} contents, {report['styles']} styles at {config['style_long_side']} px, "
         f"mixed precision {'on' if config['mixed_precision'] else 'off'}; median of {len(steps['ours'])} step(s) "
         f"after {report['warmup']} warm-up step(s) per loop, the loops alternating step by step"),
        "",
        markdown_table(["section (seconds per step)"] + [f"{name} {unit}" for name in names for unit in ("s", "%")],
                       rows),
        "",
        markdown_table(["images/s"] + names, [[""] + [speed[name] for name in names]]),
        "",
        markdown_table(["speed ratio", ""], ratios),
        "",
        (f"One-off cost: the style bank (statistics of {report['styles']} whole styles, for the standardisation) "
         f"took {report['style_bank_seconds']:.1f} s before training."),
        (f"Equality check (2 steps, fixed seed, same VGG19 layout): every D and G loss of ours and the "
         f"straightforward loop agrees to {check['losses']:.1e} (relative); the channels-last layout alone moves them by up to "
         f"{check['layout']:.1e} (float rounding, compounded over the steps)."),
    ])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu-small", help=f"a preset {sorted(PRESETS)} or a JSON file")
    parser.add_argument("--crop-size", type=int, help="training crop side (default: the config's; 64 with --quick)")
    parser.add_argument("--batch-size", type=int, help="default: the config's (2 with --quick)")
    parser.add_argument("--steps", type=int, help="timed steps per loop (default 3; 2 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per loop first (default 1)")
    parser.add_argument("--max-images", type=int, help="contents and styles read from the corpus (default 8)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (default: all)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus with content/ and styles/")
    parser.add_argument("--quick", action="store_true", help="smoke run: small images, crops and batch")
    parser.add_argument("--ablation", action="store_true",
                        help="also run ours without the shared generator forward and channels-last VGG19")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    args.crop_size = args.crop_size or (64 if args.quick else config.crop_size)
    args.batch_size = args.batch_size or (2 if args.quick else config.batch_size)
    args.steps = args.steps or (2 if args.quick else 3)
    args.max_images = args.max_images or (4 if args.quick else 8)
    args.overrides = {"content_long_side": 128, "style_long_side": 128} if args.quick else {}
    args.overrides["style_view_size"] = max(config.style_view_size, args.crop_size)  # views cover the crop
    if args.crop_size % 4 or args.steps < 1 or args.warmup < 0 or args.max_images < 1:
        parser.error("--crop-size must be a multiple of 4, --steps and --max-images ≥ 1, --warmup ≥ 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    publish(format_report(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
