"""The training loop: schedules D and G steps, EMA, logging, samples and checkpoints.

Every path derives from `run_dir`. Under `torchrun` each rank trains on its own random
batches (DDP averages gradients); only rank 0 writes.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from stylegan.discriminator import Discriminator
from stylegan.features import VGG19Features
from stylegan.generator import Generator
from stylegan.images import ImageError, open_image

from . import reports
from .batches import StyleBank, build_style_bank, sample_batch
from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import read_folder, training_paths
from .steps import training_step
from .validation import HELD_OUT_NAMES


class NonFiniteLossError(RuntimeError):
    pass


def prepare_loss_network(vgg: VGG19Features, device: torch.device) -> VGG19Features:
    """A copy of VGG19 on `device` with channels-last weights (the caller's stays as it was): its convolutions
    then run in that layout, measured ~15-20 % faster forward and backward on a 2-core CPU (oneDNN); values
    agree to float rounding (~1e-7 relative)."""
    return copy.deepcopy(vgg).to(device, memory_format=torch.channels_last)


def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for ema_param, param in zip(ema.parameters(), model.parameters()):
            ema_param.lerp_(param, 1 - decay)
        for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def _distributed() -> tuple[int, int]:
    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _first_readable(paths: list[Path], count: int) -> list[Path]:
    """The first `count` paths that open as images; the others are left to `read_folder` to report."""
    readable = []
    for path in paths:
        if len(readable) == count:
            break
        try:
            open_image(path)
        except ImageError:
            continue
        readable.append(path)
    return readable


def _gather_rng(state: Tensor, world_size: int) -> list[Tensor]:
    if world_size == 1:
        return [state]
    gathered = [torch.empty_like(state) for _ in range(world_size)]
    dist.all_gather(gathered, state)
    return gathered


def _all_agree(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every rank if any rank says True (clocks differ between processes)."""
    if world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


@dataclass
class TrainResult:
    step: int
    export_generator: Generator  # the EMA generator
    style_bank: StyleBank
    probe_contents: list[Path]
    wall_seconds: float
    skipped: list[str]
    device: str = "cpu"
    initialized_from: dict | None = None  # the `training.json` of the model that `init_from` named


def train(config: TrainConfig, content_dir: Path | Sequence[Path], style_dir: Path | Sequence[Path], run_dir: Path,
          *, resume: bool = False,
          vgg: VGG19Features | None = None, device: torch.device | None = None,
          progress: bool = True, time_limit: float | None = None,
          init_from: Path | None = None) -> TrainResult:
    """Train until `config.steps`, or until `time_limit` seconds of this call have passed (then
    checkpoint and stop, so `--resume` continues). Returns the EMA generator and what export needs.

    `content_dir`, `style_dir`: one folder or several; files named in the validation split
    (training/validation.py) are never trained on.
    `init_from`: an exported model folder whose generator weights start a new run, for fine-tuning
    (the style standardisation is refitted to this run's styles); the discriminator starts fresh."""
    content_dirs = [content_dir] if isinstance(content_dir, (str, Path)) else list(content_dir)
    style_dirs = [style_dir] if isinstance(style_dir, (str, Path)) else list(style_dir)
    rank, world_size = _distributed()
    if device is None:
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # initial weights: identical on every rank
    vgg = prepare_loss_network(vgg or VGG19Features.pretrained(), device)
    generator_model = Generator(config.generator).to(device)
    discriminator_model = Discriminator(config.discriminator).to(device)
    ema = copy.deepcopy(generator_model).requires_grad_(False)
    g_optimizer = torch.optim.Adam(generator_model.parameters(), lr=config.generator_lr, betas=config.betas)
    d_optimizer = torch.optim.Adam(discriminator_model.parameters(), lr=config.discriminator_lr, betas=config.betas)
    rng = torch.Generator().manual_seed(config.seed)

    # Probe contents are held out from training, chosen by the seed among readable images.
    all_contents = training_paths(content_dirs, HELD_OUT_NAMES)
    order = torch.randperm(len(all_contents), generator=torch.Generator().manual_seed(config.seed + 1)).tolist()
    probe_paths = sorted(_first_readable([all_contents[i] for i in order], config.num_probe_contents))
    train_paths = [p for p in all_contents if p not in set(probe_paths)]
    contents = read_folder(content_dirs[0], round(config.content_long_side * (1 + config.scale_jitter)), train_paths)
    styles = read_folder(style_dirs[0], config.style_long_side, training_paths(style_dirs, HELD_OUT_NAMES))
    if device.type == "cuda":  # crops and flips then run on the GPU instead of starving it
        contents.images = [image.to(device) for image in contents.images]
        styles.images = [image.to(device) for image in styles.images]
    bank = build_style_bank(styles, vgg, config, device)
    initialized_from = None
    if init_from is not None:
        initialized_from = read_training_record(Path(init_from))
        if not (resume and list_checkpoints(run_dir)):
            pretrained = Generator.from_pretrained(init_from, strict=True).state_dict()
            for model in (generator_model, ema):
                model.load_state_dict(pretrained, strict=True)
    for model in (generator_model, ema):  # a checkpoint restored below brings its own
        model.set_style_standardization(bank.full_statistics)
    probes = reports.ProbeSet.build(probe_paths, bank, config)

    modules = {"generator": generator_model, "discriminator": discriminator_model, "generator_ema": ema}
    optimizers = {"generator": g_optimizer, "discriminator": d_optimizer}
    step, wall_before = 0, 0.0
    checkpoints = list_checkpoints(run_dir)
    if resume and checkpoints:
        step, rng_states, extra = load_checkpoint(checkpoints[-1], modules, optimizers)
        rng.set_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
        wall_before = extra.get("wall_seconds", 0.0)
        # The config sets the learning rates, not the checkpoint: resuming with a lower one must take effect.
        for name, optimizer, lr in (("generator", g_optimizer, config.generator_lr),
                                    ("discriminator", d_optimizer, config.discriminator_lr)):
            for group in optimizer.param_groups:
                if group["lr"] != lr and rank == 0:
                    print(f"--resume: {name} learning rate {group['lr']:g} in the checkpoint, {lr:g} from the config")
                group["lr"] = lr
    elif resume:
        print(f"--resume: no checkpoint in {run_dir}, starting at step 0")
    else:
        rng.manual_seed(config.seed + 1000 * rank)
        if checkpoints:
            raise ValueError(f"{run_dir} already has checkpoints; pass --resume or use a new --run-dir")
    (run_dir / "config.json").write_text(config.to_json())

    g_train: nn.Module = generator_model
    d_train: nn.Module = discriminator_model
    if world_size > 1:
        g_train = nn.parallel.DistributedDataParallel(generator_model, find_unused_parameters=True)
        d_train = nn.parallel.DistributedDataParallel(discriminator_model, find_unused_parameters=True)
    is_writer = rank == 0
    metrics_path = run_dir / "metrics.jsonl"
    started = time.perf_counter()

    def save(at_step: int) -> None:
        wall = wall_before + time.perf_counter() - started
        rng_states = _gather_rng(rng.get_state(), world_size)
        if is_writer:
            save_checkpoint(run_dir, at_step, modules, optimizers, rng_states,
                            {"wall_seconds": wall, "world_size": world_size}, config.keep_checkpoints)

    if is_writer and step == 0:
        probes.render(ema, run_dir / "samples" / f"step-{0:07d}.png", device)
    bar = tqdm(total=config.steps, initial=step, disable=not (progress and is_writer), dynamic_ncols=True)
    window_start, window_images = time.perf_counter(), 0
    while step < config.steps:
        batch = sample_batch(contents, bank, config, rng, device, vgg)
        result = training_step(g_train, d_train, vgg, g_optimizer, d_optimizer, batch, config, rng)
        if not all(math.isfinite(value) for value in result.values()):
            last = list_checkpoints(run_dir)
            raise NonFiniteLossError(
                f"non-finite loss at step {step + 1}: {result}; stopped without saving. "
                f"Last good checkpoint: {last[-1] if last else 'none'} (resume with a lower learning rate).")
        update_ema(ema, generator_model, config.ema_decay)
        step += 1
        window_images += config.batch_size * world_size
        if step % config.log_every == 0 or step == config.steps:
            images_per_second = window_images / (time.perf_counter() - window_start)
            window_start, window_images = time.perf_counter(), 0
            record = {"step": step, **result, "images_per_second": images_per_second,
                      "wall_seconds": wall_before + time.perf_counter() - started}
            if is_writer:
                with metrics_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            bar.set_postfix({k: f"{result[k]:.3g}" for k in ("d_loss", "g_adv", "content", "style")}
                            | {"img/s": f"{images_per_second:.2f}"})
        bar.update(1)
        out_of_time = time_limit is not None and step % config.log_every == 0 and _all_agree(
            time.perf_counter() - started > time_limit, world_size, device)
        if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
            save(step)
        if out_of_time:
            if is_writer:
                probes.render(ema, run_dir / "samples" / f"step-{step:07d}.png", device)
                reports.plot_losses(metrics_path, run_dir / "losses.png")
                print(f"time limit of {time_limit:g} s reached at step {step}; checkpoint saved (--resume continues)")
            break
        if is_writer and (step % config.sample_every == 0 or step == config.steps):
            probes.render(ema, run_dir / "samples" / f"step-{step:07d}.png", device)
            reports.plot_losses(metrics_path, run_dir / "losses.png")
    bar.close()
    final_grid = run_dir / "samples" / f"step-{step:07d}.png"
    if is_writer and not final_grid.exists():  # e.g. an export from a checkpoint (--resume, no steps left)
        probes.render(ema, final_grid, device)
    wall = wall_before + time.perf_counter() - started
    return TrainResult(step, ema, bank, probe_paths, wall, contents.skipped + styles.skipped,
                       describe_device(device, world_size), initialized_from)


TRAINING_RECORD_FILE = "training.json"


def read_training_record(model_dir: Path) -> dict:
    """What an exported model says about how it was trained (`training.json`), plus where it was read."""
    path = model_dir / TRAINING_RECORD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {"model": str(model_dir), **record}


def describe_device(device: torch.device, world_size: int = 1) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"{world_size} × {name}" if world_size > 1 else name
