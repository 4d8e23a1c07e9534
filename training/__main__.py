"""python -m training --content-dir DIR --style-dir DIR --run-dir runs/NAME [--config ...] [--resume]"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from .config import PRESETS, load_config
from .trainer import NonFiniteLossError, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("--content-dir", type=Path, nargs="+", required=True, help="one or more folders of contents")
    parser.add_argument("--style-dir", type=Path, nargs="+", required=True,
                        help="one or more folders of styles; the first one's styles become the presets")
    parser.add_argument("--run-dir", type=Path, required=True, help="every output of the run goes here")
    parser.add_argument("--config", default="cpu-small", help=f"a preset {sorted(PRESETS)} or a JSON file")
    parser.add_argument("--steps", type=int, help="override the config's number of steps")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                        help="start from an exported model's generator weights (fine-tuning)")
    parser.add_argument("--max-minutes", type=float,
                        help="checkpoint, export and stop after this many minutes (resume later with --resume)")
    parser.add_argument("--sources", type=Path,
                        help="SOURCES.md with the presets' attribution (default: next to the first --style-dir)")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="upload the exported model to this Hub repo")
    parser.add_argument("--tag", help="tag the pushed revision (e.g. v1)")
    parser.add_argument("--private", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config)
    if args.steps is not None:
        config.steps = args.steps
    try:
        result = train(config, args.content_dir, args.style_dir, args.run_dir, resume=args.resume,
                       time_limit=None if args.max_minutes is None else 60 * args.max_minutes,
                       init_from=args.init_from)
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        # Every rank leaves the process group before exiting: a rank that exits with gloo's
        # threads still running can abort ("terminate called without an active exception").
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun every rank holds the same EMA weights; rank 0 alone exports and pushes
    from .export import export_model
    export_dir = export_model(result, config, args.run_dir, preset_dir=args.style_dir[0],
                              sources=args.sources or args.style_dir[0].parent / "SOURCES.md")
    print(f"exported to {export_dir}")
    if args.push_to_hub:
        from .hub import push_to_hub
        url = push_to_hub(export_dir, args.push_to_hub, tag=args.tag, private=args.private)
        print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun, once DDP has wrapped a module gloo's threads outlive destroy_process_group (measured:
        # without DDP they end there), and a rank once aborted in C++ teardown at interpreter exit ("terminate
        # called without an active exception", a still-running std::thread destroyed). Everything is written
        # and flushed by now, so leave without that teardown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
