"""ONNX Runtime backend for the Stylizer's generator (CPU): `Stylizer(..., backend="onnx")`.

The generator is exported with the torch.export-based `torch.onnx.export` (opset 18, height
and width dynamic, batch 1) into two graphs: the whole-image pass `(content, code)` and the
tiled pass `(content, code, mean_0, var_0, mean_1, ...)`, whose fixed per-layer normalisation
statistics come in as inputs. Exports are cached in a folder named by the weights' SHA-256
under `$ARCHIVE_STYLE_GAN_ONNX_CACHE`, else `$XDG_CACHE_HOME/archive-style-gan/onnx`, else
`~/.cache/archive-style-gan/onnx`, in files named by a fingerprint of the generator's source
(so a change of the network code never reuses a stale graph), and every fresh export is
checked against torch before it is kept. Needs `onnxruntime`, plus `onnx` and `onnxscript` for the export.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .files import write_file
from .generator import MIN_SIDE, Generator, NormStats

try:
    import onnxruntime
except ImportError as error:  # an optional dependency: say which package is missing
    raise ImportError(f"backend='onnx' needs onnxruntime, onnx and onnxscript ({error}); "
                      "`pip install onnxruntime onnx onnxscript` or use backend='torch'") from error

OPSET = 18
EXPORT_FORMAT = 1  # bump when the exported graphs change, so stale cache files are not reused
CACHE_ENV = "ARCHIVE_STYLE_GAN_ONNX_CACHE"
EXPORT_SIZE = (64, 48)  # (H, W) of the example input traced at export; any multiple of 4 runs later
EXPORT_TOLERANCE = 1e-4  # max |onnx - torch| on the example input for an export to be kept


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "archive-style-gan" / "onnx"


def code_fingerprint(generator: Generator) -> str:
    """12 hex digits over the source of the generator's module, the opset and the export format."""
    source = inspect.getsource(sys.modules[type(generator).__module__])
    return hashlib.sha256(f"{OPSET}:{EXPORT_FORMAT}:{source}".encode()).hexdigest()[:12]


def weights_sha256(generator: Generator) -> str:
    """SHA-256 over the generator's state dict (names, dtypes, shapes, bytes), for unsaved models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}:".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class _TiledGraph(nn.Module):
    """The generator with its normalisation statistics as flat inputs (mean_0, var_0, mean_1, ...)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, content: Tensor, code: Tensor, *statistics: Tensor) -> Tensor:
        return self.generator(content, code, list(zip(statistics[0::2], statistics[1::2])))


def _input_names(tiled: bool, layers: int) -> list[str]:
    names = ["content", "code"]
    return names + [f"{kind}_{index}" for index in range(layers) for kind in ("mean", "var")] if tiled else names


def export_generator(generator: Generator, path: Path, *, tiled: bool) -> Path:
    """Export the whole-image (`tiled=False`) or tiled graph to `path`, checked against torch."""
    with torch.inference_mode(False), torch.no_grad():
        content = torch.rand(1, 3, *EXPORT_SIZE, generator=torch.Generator().manual_seed(0))
        code = torch.randn(1, generator.config.style_dim, generator=torch.Generator().manual_seed(1))
        statistics = [value.clone() for pair in generator.measure_norm_stats(content, code) for value in pair]
        module = _TiledGraph(generator) if tiled else generator
        inputs = (content, code, *statistics) if tiled else (content, code)
        names = _input_names(tiled, len(statistics) // 2)
        spatial = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
        dynamic_shapes = (spatial, None, (None,) * len(statistics)) if tiled else (spatial, None)  # *statistics: one tuple
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, inputs, dynamo=True, opset_version=OPSET, input_names=names,
                                        output_names=["stylized"], dynamic_shapes=dynamic_shapes, verbose=False)
        graph = program.model_proto.SerializeToString()
        expected = module(*inputs).numpy()
        actual = _session(graph, 1).run(None, dict(zip(names, (t.numpy() for t in inputs))))[0]
        error = float(np.abs(actual - expected).max())
        if not error <= EXPORT_TOLERANCE:
            raise RuntimeError(f"ONNX export of the generator differs from torch by {error:.2e} "
                               f"(> {EXPORT_TOLERANCE:g}); use backend='torch'")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, graph)  # concurrent exporters never see a half-written file
    return path


def _session(graph: Path | bytes, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options,
                                        providers=["CPUExecutionProvider"])


class OnnxGenerator:
    """Runs `generator(content, code, norm_stats)` in onnxruntime; exports and opens each graph on first use.

    `sha256` names the weights in the cache (the Stylizer passes its weights file's hash);
    without it the state dict is hashed. `threads` defaults to torch's intra-op thread count
    (one per core unless the process set it). Safe to call from threads.
    """

    def __init__(self, generator: Generator, sha256: str | None = None, *, cache_dir: str | os.PathLike | None = None,
                 threads: int | None = None) -> None:
        self.generator = generator
        self.sha256 = sha256 or weights_sha256(generator)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.threads = threads or torch.get_num_threads()
        self.fingerprint = code_fingerprint(generator)
        self._sessions: dict[bool, onnxruntime.InferenceSession] = {}
        self._lock = threading.Lock()

    def path(self, *, tiled: bool) -> Path:
        kind = "tiled" if tiled else "whole"
        return self.cache_dir / self.sha256 / f"generator-{kind}-{self.fingerprint}.onnx"

    def session(self, *, tiled: bool) -> onnxruntime.InferenceSession:
        with self._lock:
            if tiled not in self._sessions:
                path = self.path(tiled=tiled)
                if not path.exists():
                    export_generator(self.generator, path, tiled=tiled)
                self._sessions[tiled] = _session(path, self.threads)
            return self._sessions[tiled]

    def __call__(self, content: Tensor, code: Tensor, norm_stats: NormStats | None = None) -> Tensor:
        """(1, 3, H, W) float32 on the CPU, H and W multiples of 4 -> (1, 3, H, W), as `Generator.forward`."""
        if content.shape[0] != 1 or code.shape[0] != 1:
            raise ValueError(f"the onnx backend runs one image at a time, got content {tuple(content.shape)} "
                             f"and code {tuple(code.shape)}")
        height, width = content.shape[-2:]
        if height % 4 or width % 4 or min(height, width) < MIN_SIDE:  # onnxruntime's own error is cryptic
            raise ValueError(f"height and width must be multiples of 4 and at least {MIN_SIDE}, got {(height, width)}")
        tiled = norm_stats is not None
        session = self.session(tiled=tiled)
        tensors = [content, code] + ([value for pair in norm_stats for value in pair] if tiled else [])
        names = [node.name for node in session.get_inputs()]
        feeds = {name: tensor.detach().float().contiguous().numpy() for name, tensor in zip(names, tensors)}
        return torch.from_numpy(session.run(None, feeds)[0])
