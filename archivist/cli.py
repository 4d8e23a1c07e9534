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
from pathlib import Path

from tqdm import tqdm

from stylegan.images import IMAGE_SUFFIXES
from stylegan.inference import DEFAULT_TEXTURE_SIDE, QUALITIES, STYLIZE_MODES, Stylizer, StylizeSettings
from stylegan.optimize import OPTIMIZE_STEPS, REFINE_STEPS

from .credentials import (
    CredentialsError,
    CredentialsReport,
    SigningIdentity,
    checked_trust_anchors,
    identity_from_environment,
    local_identity,
    read_credentials,
)
from .pipeline import FORMAT_SUFFIXES, Job, StyleChoice, StyleImage, ToFolder, stylize
from .provenance import sidecar_path

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


def style_choice(stylizer: Stylizer, specs: list[str], weights: list[float] | None) -> StyleChoice:
    """--style/--weight -> the styles to blend: image files and presets of the model."""
    if weights is None:
        weights = [1.0] * len(specs)
    if len(weights) != len(specs):
        raise UsageError(f"{len(specs)} --style but {len(weights)} --weight; give one weight per style or none")
    sources: list[tuple[str | StyleImage, float]] = []
    for spec, weight in zip(specs, weights):
        path = Path(spec)
        if path.is_file():
            sources.append((StyleImage(path.read_bytes(), path.name), weight))
        elif spec in stylizer.presets:
            sources.append((spec, weight))
        else:
            raise UsageError(f"--style {spec!r} is neither an image file nor a preset of this model "
                             "(`python -m archivist presets` lists them)")
    return StyleChoice(tuple(sources))


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


def settings_from_arguments(args: argparse.Namespace) -> StylizeSettings:
    try:
        return StylizeSettings(args.strength, args.preserve_color, args.max_long_side, args.texture_side or None,
                               args.mode, args.quality, args.steps, args.seed)
    except ValueError as error:
        raise UsageError(str(error)) from error


def job_from_arguments(args: argparse.Namespace, stylizer: Stylizer, settings: StylizeSettings) -> Job:
    """The options as one job, its styles checked: readable, and presets usable with these settings."""
    try:
        job = Job(style_choice(stylizer, args.style, args.weight), settings)
        job.style.resolve(stylizer, settings)
    except ValueError as error:
        raise UsageError(str(error)) from error
    return job


def run_stylize(args: argparse.Namespace) -> int:
    settings = settings_from_arguments(args)
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
    job = job_from_arguments(args, stylizer, settings)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --out {out_dir}: {error}") from error
    destination = ToFolder(out_dir, args.format, identity)

    written = 0
    label = f"rank {rank}/{world}" if world > 1 else "stylize"
    with tqdm(inputs, desc=label, unit="image", position=rank if world > 1 else None, file=sys.stderr) as bar:
        for path in bar:
            bar.set_postfix_str(path.name)

            def show(fraction: float, message: str, name: str = path.name) -> None:
                bar.set_postfix_str(f"{name}: {message}")

            try:
                result = stylize(stylizer, path.read_bytes(), str(path), job, destination, progress=show)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch; listed at the end
                failures.append((str(path), _reason(error, path)))
                continue
            written += 1
            tqdm.write(str(result.kept), file=sys.stdout)

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

