"""Whole training state as safetensors + JSON (no pickles): models, optimizers, step, RNG."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as tensors_to_bytes
from torch import Tensor

from stylegan.files import write_file

CHECKPOINT_PREFIX = "step-"


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer's state dict into flat tensors and a JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value.contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], prefix: str, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: Path, step: int, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], rng_states: list[Tensor],
                    extra: dict, keep: int) -> Path:
    """Write `run_dir/checkpoints/step-NNNNNNN` atomically (temp dir + rename); keep the last `keep`."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{step:07d}"
    temporary = root / f".tmp-{final.name}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    tensors: dict[str, Tensor] = {}
    for name, module in modules.items():
        tensors |= {f"{name}.{key}": value.detach().contiguous().clone()
                    for key, value in module.state_dict().items()}
    meta = {"step": step, "extra": extra, "optimizers": {}}
    for name, optimizer in optimizers.items():
        optimizer_state, optimizer_meta = optimizer_tensors(optimizer, f"optimizer_{name}")
        tensors |= optimizer_state
        meta["optimizers"][name] = optimizer_meta
    for rank, state in enumerate(rng_states):
        tensors[f"rng.{rank}"] = state
    try:
        write_file(temporary / "state.safetensors", tensors_to_bytes({k: v.cpu() for k, v in tensors.items()}))
        write_file(temporary / "meta.json", json.dumps(meta, indent=1).encode())
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)  # e.g. a full disk: leave nothing half-written behind
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "meta.json").exists())


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> tuple[int, list[Tensor], dict]:
    """Restore modules (strict) and optimizers in place; returns (step, rng states, extra)."""
    tensors = load_file(path / "state.safetensors")
    meta = json.loads((path / "meta.json").read_text())
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                               strict=True)
    for name, optimizer in optimizers.items():
        load_optimizer(optimizer, tensors, f"optimizer_{name}", meta["optimizers"][name])
    rng_states = [tensors[f"rng.{rank}"] for rank in range(sum(k.startswith("rng.") for k in tensors))]
    return meta["step"], rng_states, meta["extra"]
