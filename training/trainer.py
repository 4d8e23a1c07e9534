"""The training loop: schedules D and G steps, EMA, logging, samples and checkpoints.

`train` sets a run up (`set_up`), restores its last checkpoint when resuming (`restore`) and steps it (`loop`).

Every path derives from `run_dir`. Under `torchrun` each rank trains on its own random
batches (DDP averages gradients); only rank 0 writes.
"""
from __future__ import annotations

import copy
import dataclasses
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
from stylegan.files import write_file
from stylegan.generator import Generator
from stylegan.images import ImageError, open_image

from . import reports
from .batches import StyleBank, build_style_bank, sample_batch
from .checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import Folder, read_folder, training_paths
from .negatives import GramQueue
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


@dataclass
class Run:
    """What the loop works on: models, optimisers, the batch RNG, data and probes, on one rank."""
    config: TrainConfig
    run_dir: Path
    device: torch.device
    rank: int
    world_size: int
    vgg: VGG19Features
    generator: Generator
    discriminator: Discriminator
    ema: Generator
    g_optimizer: torch.optim.Optimizer
    d_optimizer: torch.optim.Optimizer
    rng: torch.Generator
    contents: Folder
    styles: Folder
    bank: StyleBank
    probe_paths: list[Path]
    probes: reports.ProbeSet
    initialized_from: dict | None

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator, "generator_ema": self.ema}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.g_optimizer, "discriminator": self.d_optimizer}


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
    run = set_up(config, content_dirs, style_dirs, run_dir, vgg=vgg, device=device, init_from=init_from,
                 keep_initial_weights=resume and bool(list_checkpoints(run_dir)))
    step, wall_before = restore(run, resume)
    (run_dir / "config.json").write_text(config.to_json())
    step, wall = loop(run, step, wall_before, progress=progress, time_limit=time_limit)
    return TrainResult(step, run.ema, run.bank, run.probe_paths, wall, run.contents.skipped + run.styles.skipped,
                       describe_device(run.device, run.world_size), run.initialized_from)


def set_up(config: TrainConfig, content_dirs: list[Path], style_dirs: list[Path], run_dir: Path, *,
           vgg: VGG19Features | None, device: torch.device | None, init_from: Path | None,
           keep_initial_weights: bool) -> Run:
    """Models (seeded alike on every rank), optimisers, data, style bank and probes for a new run.
    `init_from`'s generator weights are loaded unless `keep_initial_weights` (a checkpoint will be restored)."""
    rank, world_size = _distributed()
    if device is None:
        device = torch.device(f"cuda:{rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu")
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # initial weights: identical on every rank
    vgg = prepare_loss_network(vgg or VGG19Features.pretrained(), device)
    generator = Generator(config.generator).to(device)
    discriminator = Discriminator(config.discriminator).to(device)
    ema = copy.deepcopy(generator).requires_grad_(False)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=config.generator_lr, betas=config.betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=config.discriminator_lr, betas=config.betas)
    rng = torch.Generator().manual_seed(config.seed)

    # Probe contents are held out from training, chosen by the seed among readable images.
    all_contents = training_paths(content_dirs, HELD_OUT_NAMES)
    order = torch.randperm(len(all_contents), generator=torch.Generator().manual_seed(config.seed + 1)).tolist()
    probe_paths = sorted(_first_readable([all_contents[i] for i in order], config.num_probe_contents))
    train_paths = [p for p in all_contents if p not in set(probe_paths)]
    contents = read_folder(content_dirs[0], round(config.content_long_side * (1 + config.scale_jitter)), train_paths)
    styles = read_folder(style_dirs[0], config.style_long_side, training_paths(style_dirs, HELD_OUT_NAMES))
    if device.type == "cuda":  # crops and flips then run on the GPU instead of starving it
        contents = dataclasses.replace(contents, images=[image.to(device) for image in contents.images])
        styles = dataclasses.replace(styles, images=[image.to(device) for image in styles.images])
    bank = build_style_bank(styles, vgg, config, device)
    initialized_from, record = None, run_dir / INITIALIZED_FROM_FILE
    if init_from is not None:
        initialized_from = read_training_record(Path(init_from))
        if rank == 0:
            write_file(record, (json.dumps(initialized_from, indent=2) + "\n").encode())
        if not keep_initial_weights:
            pretrained = Generator.from_pretrained(init_from, strict=True).state_dict()
            for model in (generator, ema):
                model.load_state_dict(pretrained, strict=True)
    elif record.exists():  # a resumed fine-tune still knows what it started from (its card and training.json say it)
        initialized_from = json.loads(record.read_text())
    for model in (generator, ema):  # a checkpoint restored later brings its own
        model.set_style_standardization(bank.full_statistics)
    probes = reports.ProbeSet.build(probe_paths, bank, config)
    return Run(config, run_dir, device, rank, world_size, vgg, generator, discriminator, ema, g_optimizer,
               d_optimizer, rng, contents, styles, bank, probe_paths, probes, initialized_from)


def restore(run: Run, resume: bool) -> tuple[int, float]:
    """With `resume`, the run's last checkpoint (models, optimisers, RNG, wall time) if it has one; else
    the batch RNG seeded for this rank. Returns (step, wall seconds before this call)."""
    config, rank, checkpoints = run.config, run.rank, list_checkpoints(run.run_dir)
    if resume and checkpoints:
        step, rng_states, extra = load_checkpoint(checkpoints[-1], run.modules, run.optimizers)
        run.rng.set_state(rng_states[rank] if rank < len(rng_states) else rng_states[0])
        # The config sets the learning rates, not the checkpoint: resuming with a lower one must take effect.
        for name, optimizer, lr in (("generator", run.g_optimizer, config.generator_lr),
                                    ("discriminator", run.d_optimizer, config.discriminator_lr)):
            for group in optimizer.param_groups:
                if group["lr"] != lr and rank == 0:
                    print(f"--resume: {name} learning rate {group['lr']:g} in the checkpoint, {lr:g} from the config")
                group["lr"] = lr
        return step, extra.get("wall_seconds", 0.0)
    if resume:
        print(f"--resume: no checkpoint in {run.run_dir}, starting at step 0")
        return 0, 0.0
    run.rng.manual_seed(config.seed + 1000 * rank)
    if checkpoints:
        raise ValueError(f"{run.run_dir} already has checkpoints; pass --resume or use a new --run-dir")
    return 0, 0.0


def loop(run: Run, step: int, wall_before: float, *, progress: bool = True,
         time_limit: float | None = None) -> tuple[int, float]:
    """Step until `config.steps` or `time_limit`: D and G steps, EMA, logging, checkpoints and samples.
    Returns (the last step, the run's wall seconds)."""
    config, run_dir, device, world_size = run.config, run.run_dir, run.device, run.world_size
    g_train: nn.Module = run.generator
    d_train: nn.Module = run.discriminator
    if world_size > 1:
        g_train = nn.parallel.DistributedDataParallel(run.generator, find_unused_parameters=True)
        d_train = nn.parallel.DistributedDataParallel(run.discriminator, find_unused_parameters=True)
    is_writer = run.rank == 0
    metrics_path = run_dir / "metrics.jsonl"
    started = time.perf_counter()

    def save(at_step: int) -> None:
        wall = wall_before + time.perf_counter() - started
        rng_states = _gather_rng(run.rng.get_state(), world_size)
        if is_writer:
            save_checkpoint(run_dir, at_step, run.modules, run.optimizers, rng_states,
                            {"wall_seconds": wall, "world_size": world_size}, config.keep_checkpoints)

    if is_writer and step == 0:
        run.probes.render(run.ema, run_dir / "samples" / f"step-{0:07d}.png", device)
    bar = tqdm(total=config.steps, initial=step, disable=not (progress and is_writer), dynamic_ncols=True)
    window_start, window_images = time.perf_counter(), 0
    queue = GramQueue(config.contrastive_queue) if config.contrastive_queue and config.contrastive_weight else None
    while step < config.steps:
        batch = sample_batch(run.contents, run.bank, config, run.rng, device, run.vgg)
        result = training_step(g_train, d_train, run.vgg, run.g_optimizer, run.d_optimizer, batch, config, run.rng,
                               queue)
        if not all(math.isfinite(value) for value in result.values()):
            last = list_checkpoints(run_dir)
            raise NonFiniteLossError(
                f"non-finite loss at step {step + 1}: {result}; stopped without saving. "
                f"Last good checkpoint: {last[-1] if last else 'none'} (resume with a lower learning rate).")
        update_ema(run.ema, run.generator, config.ema_decay)
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
                run.probes.render(run.ema, run_dir / "samples" / f"step-{step:07d}.png", device)
                reports.plot_losses(metrics_path, run_dir / "losses.png")
                print(f"time limit of {time_limit:g} s reached at step {step}; checkpoint saved (--resume continues)")
            break
        if is_writer and (step % config.sample_every == 0 or step == config.steps):
            run.probes.render(run.ema, run_dir / "samples" / f"step-{step:07d}.png", device)
            reports.plot_losses(metrics_path, run_dir / "losses.png")
    bar.close()
    final_grid = run_dir / "samples" / f"step-{step:07d}.png"
    if is_writer and not final_grid.exists():  # e.g. an export from a checkpoint (--resume, no steps left)
        run.probes.render(run.ema, final_grid, device)
    return step, wall_before + time.perf_counter() - started


TRAINING_RECORD_FILE = "training.json"
INITIALIZED_FROM_FILE = "initialized_from.json"  # in the run directory: the --init-from model's record


def read_training_record(model_dir: Path) -> dict:
    """What an exported model says about how it was trained (`training.json`), plus where it was read."""
    path = model_dir / TRAINING_RECORD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {"model": str(model_dir), **record}


def describe_device(device: torch.device, world_size: int = 1) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return f"{world_size} × {name}" if world_size > 1 else name
