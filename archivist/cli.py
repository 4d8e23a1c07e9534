"""Command line for batch stylisation of scans.

    python -m archivist stylize scans/ "more/**/*.tif" --style hokusai_great_wave_off_kanagawa --out stylized/
    python -m archivist stylize page.jpg --style a.jpg --weight 2 --style b.jpg --weight 1 --out out/
    python -m archivist stylize page.jpg --style a.jpg --quality best --out out/      # refined, about a minute on a CPU
    python -m archivist presets
    python -m archivist verify stylized/*.png

Inputs are files, folders (searched recursively for images) and glob patterns. Nothing is
overwritten: each result gets a new name (`page.stylized.png`, `page.stylized-1.png`, ...) and
is written with embedded provenance, signed Content Credentials and a JSON sidecar. A file that
fails is reported and the batch goes on; the exit status is 0 when every input was written, 1
when some failed, 2 for a usage error (bad options, unknown style, a model or a signing identity
that does not load).

Results are signed by the identity in CONTENT_CREDENTIALS_CERTS / CONTENT_CREDENTIALS_KEY, or
else by a self-issued one kept in --credentials (made on first use). `verify` prints what each
file's Content Credentials say and whether they hold; its exit status is 0 when every file's
are valid, 1 otherwise.

Under `torchrun --nproc-per-node N python -m archivist stylize ...` each process takes every
N-th input (RANK and WORLD_SIZE from the environment); no process group is needed.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from stylegan.images import open_image
from stylegan.inference import (
    DEFAULT_TEXTURE_SIDE,
    MIN_TEXTURE_SIDE,
    QUALITIES,
    STYLIZE_MODES,
    ProgressCallback,
    Style,
    Stylizer,
    refine_working_size,
)
from stylegan.optimize import OPTIMIZE_STEPS, OPTIMIZE_STYLE_LAYERS, REFINE_STEPS, REFINE_STYLE_LAYERS

from .credentials import (
    CredentialsError,
    CredentialsReport,
    Ingredient,
    Signing,
    SigningIdentity,
    checked_trust_anchors,
    identity_from_environment,
    local_identity,
    preset_ingredient,
    read_credentials,
)
from .provenance import new_record, save_with_provenance, sha256_bytes, sidecar_path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
FORMAT_SUFFIXES = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tiff": ".tif"}
SAVE_OPTIONS: dict[str, dict[str, object]] = {"jpg": {"quality": 95}, "webp": {"quality": 95}}
# Image modes each output format can hold as they are; anything else fails with a hint rather
# than losing alpha or bit depth without a word.
FORMAT_MODES = {"jpg": {"L", "RGB"}, "webp": {"L", "RGB", "LA", "RGBA"}}
GLOB_CHARACTERS = frozenset("*?[")
EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with the command as a whole (exit status 2), not with one input."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m archivist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_model_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--model", metavar="REPO_OR_PATH", help="Hub repo id or local model folder "
                             "(default: the bundled model)")
        command.add_argument("--revision", help="Hub revision (tag, branch or commit) to pin")
        command.add_argument("--device", help="torch device (default: cuda if available, per-rank under torchrun)")

    stylize = commands.add_parser("stylize", help="stylise images, folders or glob patterns")
    stylize.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder (recursive) or glob")
    stylize.add_argument("--style", action="append", required=True, metavar="PATH|PRESET",
                         help="style image or preset name; repeat to blend several")
    stylize.add_argument("--weight", action="append", type=float, metavar="W",
                         help="blend weight of the --style at the same position (default: equal)")
    stylize.add_argument("--strength", type=float, default=0.8, help="0 keeps the content, 1 full style")
    stylize.add_argument("--preserve-color", action="store_true", help="keep the content's colours")
    stylize.add_argument("--max-long-side", type=int, metavar="N", help="downsize results to this long side")
    stylize.add_argument("--texture-side", type=int, default=DEFAULT_TEXTURE_SIDE, metavar="N",
                         help="paint the style at about N² pixels and restore the full-resolution detail; "
                              f"0: at the image's own resolution (default {DEFAULT_TEXTURE_SIDE})")
    stylize.add_argument("--mode", choices=STYLIZE_MODES, default="feedforward",
                         help="feedforward: the trained network (fast); optimize: per-image optimisation (slow)")
    stylize.add_argument("--quality", choices=QUALITIES, default="fast",
                         help="fast: the network's result; best: that result refined by optimisation against the "
                              "style image's Gram matrices (about a minute an image on a CPU, seconds on a GPU)")
    stylize.add_argument("--steps", type=int, help=f"loss evaluations of --quality best (default {REFINE_STEPS}) "
                                                   f"or --mode optimize (default {OPTIMIZE_STEPS})")
    stylize.add_argument("--seed", type=int, help="seed for the optimisation's initial noise (recorded)")
    stylize.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    stylize.add_argument("--format", choices=sorted(FORMAT_SUFFIXES), default="png", help="output format")
    stylize.add_argument("--credentials", type=Path, metavar="DIR",
                         help="folder of the self-issued signing identity, made on first use; unused when "
                              "CONTENT_CREDENTIALS_CERTS/_KEY are set (default: "
                              "$XDG_DATA_HOME/archive-style-gan/credentials)")
    add_model_options(stylize)

    presets = commands.add_parser("presets", help="list the model's style presets with attribution")
    add_model_options(presets)

    verify = commands.add_parser("verify", help="check and show the Content Credentials of image files")
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE")
    verify.add_argument("--trust-anchors", type=Path, metavar="PEM",
                        help="root certificates to trust (default: none, so every signer reads as untrusted)")
    verify.add_argument("--json", action="store_true", help="print the reports as JSON, manifest stores included")
    return parser


def default_credentials_dir(environ: Mapping[str, str]) -> Path:
    """Where the command line keeps its self-issued identity: one per user, outside any output folder."""
    data_home = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "archive-style-gan" / "credentials"


def load_identity(args: argparse.Namespace) -> SigningIdentity:
    try:
        return identity_from_environment(os.environ) or local_identity(
            args.credentials or default_credentials_dir(os.environ))
    except CredentialsError as error:
        raise UsageError(f"no usable signing identity: {error}") from error


def distributed_rank(environ: Mapping[str, str]) -> tuple[int, int]:
    """(rank, world size) from torchrun's RANK / WORLD_SIZE; (0, 1) when not under torchrun."""
    if "RANK" not in environ and "WORLD_SIZE" not in environ:
        return 0, 1
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    except (KeyError, ValueError) as error:
        raise UsageError(f"RANK and WORLD_SIZE must both be integers, got RANK={environ.get('RANK')!r} "
                         f"WORLD_SIZE={environ.get('WORLD_SIZE')!r}") from error
    if not 0 <= rank < world:
        raise UsageError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def collect_inputs(specs: list[str], exclude: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files, folders and globs into a sorted-per-argument list of unique image paths.

    Files explicitly named are taken whatever their suffix (a bad one fails when read). Folders
    and globs contribute files with image suffixes, except earlier results, so that a re-run
    does not stylise them again: files with a provenance sidecar, and a folder's files under
    `exclude` (the output folder) when that lies inside it. Returns (paths, failures).
    """
    found: dict[Path, Path] = {}  # resolved -> as given
    failures: list[tuple[str, str]] = []
    exclude = exclude.resolve()

    def is_result(path: Path) -> bool:
        return sidecar_path(path).exists()

    def add_folder(folder: Path) -> int:
        skip = None if _is_within(folder.resolve(), exclude) else exclude
        added = 0
        for path in sorted(folder.rglob("*")):
            if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not is_result(path)
                    and not (skip and _is_within(path.resolve(), skip))):
                found.setdefault(path.resolve(), path)
                added += 1
        return added

    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found.setdefault(path.resolve(), path)
        elif path.is_dir():
            if not add_folder(path):
                failures.append((spec, "folder holds no image files"))
        elif GLOB_CHARACTERS & set(spec):
            added = 0
            for match in sorted(Path(name) for name in glob.glob(spec, recursive=True)):
                if match.is_dir():
                    added += add_folder(match)
                elif match.suffix.lower() in IMAGE_SUFFIXES and not is_result(match):
                    found.setdefault(match.resolve(), match)
                    added += 1
            if not added:
                failures.append((spec, "pattern matches no image files"))
        else:
            failures.append((spec, "no such file or folder"))
    return list(found.values()), failures


def resolve_style(stylizer: Stylizer, specs: list[str], weights: list[float] | None, mode: str,
                  quality: str = "fast") -> tuple[Style, list[dict[str, object]], list[Ingredient]]:
    """--style/--weight -> (a style for `Stylizer.stylize`, its description for `provenance.new_record`,
    its ingredients for the Content Credentials)."""
    if weights is None:
        weights = [1.0] * len(specs)
    if len(weights) != len(specs):
        raise UsageError(f"{len(specs)} --style but {len(weights)} --weight; give one weight per style or none")
    if any(weight < 0 for weight in weights) or sum(weights) <= 0:
        raise UsageError(f"style weights must be ≥ 0 with a positive sum, got {weights}")
    sources: list[tuple[str | Image.Image, float]] = []
    described: list[dict[str, object]] = []
    ingredients: list[Ingredient] = []
    for spec, weight in zip(specs, weights):
        path = Path(spec)
        if path.is_file():
            data = path.read_bytes()
            try:
                image = open_image(data, name=spec)
            except ValueError as error:
                raise UsageError(f"style image {error}") from error
            sources.append((image, weight))
            described.append({"image": path.name, "sha256": sha256_bytes(data), "weight": weight})
            ingredients.append(Ingredient(path.name, data, weight=weight))
        elif spec in stylizer.presets:
            if mode == "optimize" or quality == "best":
                try:  # both match the style's Grams: the preset's must be stored with the model
                    layers = OPTIMIZE_STYLE_LAYERS if mode == "optimize" else REFINE_STYLE_LAYERS
                    stylizer.preset_grams(spec, layers, "--mode optimize" if mode == "optimize" else "--quality best")
                except ValueError as error:
                    raise UsageError(str(error)) from error
            preset = stylizer.presets[spec]
            sources.append((spec, weight))
            described.append({"preset": spec, "title": preset.label, "license": preset.license, "weight": weight})
            ingredients.append(preset_ingredient(spec, preset, weight))
        else:
            raise UsageError(f"--style {spec!r} is neither an image file nor a preset of this model "
                             "(`python -m archivist presets` lists them)")
    style = sources[0][0] if len(sources) == 1 else sources
    return style, described, ingredients


def output_name(source: Path, number: int, suffix: str) -> str:
    """`page.stylized.png`, then `page.stylized-1.png`, `page.stylized-2.png`, ..."""
    return f"{source.stem}.stylized{suffix}" if number == 0 else f"{source.stem}.stylized-{number}{suffix}"


def _reason(error: BaseException, path: Path) -> str:
    message = str(error) or type(error).__name__
    prefix = f"{path}: "
    return message.removeprefix(prefix)


def load_stylizer(args: argparse.Namespace) -> Stylizer:
    import torch

    device = args.device
    if device is None and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"  # one GPU per torchrun process
    # huggingface_hub prints "Loading weights ..." on stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            return Stylizer.from_pretrained(args.model, revision=args.revision, device=device)
        except Exception as error:  # any failure to load is fatal for the whole command
            raise UsageError(f"cannot load model {args.model or 'bundled'}: {error}") from error


@dataclass(frozen=True)
class Job:
    """Everything that is the same for every input of one `stylize` command."""
    style: Style
    style_description: list[dict[str, object]]
    strength: float
    preserve_color: bool
    max_long_side: int | None
    texture_side: int | None
    mode: str
    quality: str
    steps: int
    seed: int | None
    out_dir: Path
    format: str
    identity: SigningIdentity
    style_ingredients: tuple[Ingredient, ...]

    def settings(self, content_size: tuple[int, int]) -> dict[str, object]:
        """What the provenance record keeps besides model, style, strength and seed; best quality adds the
        (width, height) it optimised an image of `content_size` at."""
        settings: dict[str, object] = {"mode": self.mode, "quality": self.quality,
                                       "preserve_color": self.preserve_color,
                                       "max_long_side": self.max_long_side, "format": self.format,
                                       "texture_side": self.texture_side,
                                       "styles": [item.get("preset", item.get("image")) for item in
                                                  self.style_description]}
        if self.mode == "optimize" or self.quality == "best":
            settings["steps"] = self.steps
        if self.quality == "best":
            settings["working_size"] = list(refine_working_size(content_size, self.max_long_side, self.texture_side))
        return settings


def stylize_one(stylizer: Stylizer, path: Path, job: Job, progress: ProgressCallback | None = None) -> Path:
    """Stylise one file and write it under a new name in `job.out_dir`; returns the path written."""
    data = path.read_bytes()
    content = open_image(data, name=str(path))
    stylized = stylizer.stylize(content, job.style, job.strength, preserve_color=job.preserve_color, seed=job.seed,
                                max_long_side=job.max_long_side, texture_side=job.texture_side, progress=progress,
                                mode=job.mode, quality=job.quality, steps=job.steps)
    allowed = FORMAT_MODES.get(job.format)
    if allowed is not None and stylized.mode not in allowed:
        lost = "alpha" if "A" in stylized.mode else "bit depth"
        raise ValueError(f"a {stylized.mode} result cannot be saved as {job.format} without losing {lost}; "
                         "use --format png or tiff")
    record = new_record(source_sha256=sha256_bytes(data), source_name=path.name, model_info=stylizer.model_info,
                        style=job.style_description, style_strength=job.strength, settings=job.settings(content.size),
                        seed=job.seed)
    suffix = FORMAT_SUFFIXES[job.format]
    number = 0
    while True:
        candidate = job.out_dir / output_name(path, number, suffix)
        number += 1
        if candidate.exists():
            continue
        try:
            return save_with_provenance(stylized, candidate, record, overwrite=False,
                                        signing=Signing(job.identity, data, job.style_ingredients),
                                        **SAVE_OPTIONS.get(job.format, {}))
        except FileExistsError:
            continue  # taken meanwhile (another rank), or its sidecar exists: try the next name


def run_stylize(args: argparse.Namespace) -> int:
    if not 0.0 <= args.strength <= 1.0:
        raise UsageError(f"--strength must be in [0, 1], got {args.strength}")
    if args.max_long_side is not None and args.max_long_side < 8:
        raise UsageError(f"--max-long-side must be at least 8, got {args.max_long_side}")
    if args.texture_side and args.texture_side < MIN_TEXTURE_SIDE:
        raise UsageError(f"--texture-side must be 0 or at least {MIN_TEXTURE_SIDE}, got {args.texture_side}")
    if args.mode == "optimize" and args.quality == "best":
        raise UsageError("--quality best refines the network's result; --mode optimize has none to refine")
    if args.steps is not None and args.mode != "optimize" and args.quality != "best":
        raise UsageError("--steps only applies to --quality best and --mode optimize")
    steps = args.steps if args.steps is not None else OPTIMIZE_STEPS if args.mode == "optimize" else REFINE_STEPS
    if steps < 1:
        raise UsageError(f"--steps must be ≥ 1, got {steps}")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is an existing file; it must be a folder (inputs are never overwritten)")
    rank, world = distributed_rank(os.environ)
    identity = load_identity(args)
    inputs, failures = collect_inputs(args.inputs, exclude=out_dir)
    if rank != 0:
        failures = []  # inputs that could not be found are reported once, by rank 0
    inputs = inputs[rank::world]
    stylizer = load_stylizer(args)
    style, style_description, style_ingredients = resolve_style(stylizer, args.style, args.weight, args.mode,
                                                                args.quality)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out_dir}: {error}") from error
    job = Job(style, style_description, args.strength, args.preserve_color, args.max_long_side,
              args.texture_side or None, args.mode, args.quality, steps, args.seed, out_dir, args.format, identity,
              tuple(style_ingredients))

    written = 0
    label = f"rank {rank}/{world}" if world > 1 else "stylize"
    with tqdm(inputs, desc=label, unit="image", position=rank if world > 1 else None, file=sys.stderr) as bar:
        for path in bar:
            bar.set_postfix_str(path.name)

            def show(fraction: float, message: str, name: str = path.name) -> None:
                bar.set_postfix_str(f"{name}: {message}")

            try:
                output = stylize_one(stylizer, path, job, progress=show)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch; listed at the end
                failures.append((str(path), _reason(error, path)))
                continue
            written += 1
            tqdm.write(str(output), file=sys.stdout)

    where = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"{written} of {len(inputs)} image(s) written to {out_dir}{where}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} failure(s):", file=sys.stderr)
        for name, reason in failures:
            print(f"  {name}: {reason}", file=sys.stderr)
        return EXIT_FAILURES
    return EXIT_OK


def run_presets(args: argparse.Namespace) -> int:
    stylizer = load_stylizer(args)
    if not stylizer.presets:
        print(f"the model {stylizer.model_info.repo} has no presets", file=sys.stderr)
        return EXIT_OK
    width = max(len(name) for name in stylizer.presets)
    for name, preset in sorted(stylizer.presets.items()):
        print(f"{name:<{width}}  {preset.label}")
        details = "; ".join(part for part in (preset.license, preset.source and f"source: {preset.source}") if part)
        if details:
            print(f"{'':<{width}}  {details}")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    anchors = None
    if args.trust_anchors is not None:
        try:
            anchors = checked_trust_anchors(args.trust_anchors.read_bytes(), str(args.trust_anchors))
        except (OSError, CredentialsError) as error:
            raise UsageError(f"--trust-anchors: {error}") from error
    reports = {}
    for path in args.files:
        try:
            reports[str(path)] = read_credentials(path.read_bytes(), trust_anchors=anchors)
        except OSError as error:
            reports[str(path)] = CredentialsReport("unreadable", f"Unreadable: {error.strerror or error}.")
    if args.json:
        print(json.dumps({name: report.to_dict() for name, report in reports.items()}, indent=2, ensure_ascii=False))
    else:
        for name, report in reports.items():
            print(f"{name}: {report.text()}")
    return EXIT_OK if all(report.valid for report in reports.values()) else EXIT_FAILURES


COMMANDS = {"stylize": run_stylize, "presets": run_presets, "verify": run_verify}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"python -m archivist {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE

