"""The app served in-process on loopback, for the tests that attack it (hostile inputs, security)."""
from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

import app
from archivist.archive import Archive
from benchmarks.load_app import free_port
from stylegan.inference import Stylizer

PRESET = "hokusai_great_wave_off_kanagawa"


@functools.lru_cache(maxsize=1)
def bundled_stylizer() -> Stylizer:
    """The bundled model on the CPU (loads in well under a second; stylises small images in milliseconds)."""
    return Stylizer.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def one_torch_thread():
    """The images here are tiny: extra threads only add overhead, and on a shared machine
    spinning OpenMP workers slow these tests down many times over. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Served:
    demo: app.gr.Blocks
    archive: Archive
    url: str  # ends in "/"


@contextmanager
def serve(archive: Archive, **launch_overrides) -> Iterator[Served]:
    """`build_demo` launched as `app.main` would (`launch_options`), on a free loopback port."""
    demo = app.build_demo(bundled_stylizer(), archive)
    options = app.launch_options(archive) | launch_overrides
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **options)
    try:
        yield Served(demo, archive, url)
    finally:
        demo.close()


def raw_call(url: str, api_name: str, data: list, *, query: str = "", timeout: float = 120) -> dict:
    """Join the queue with a hand-made payload (what a hostile client can send, bypassing
    gradio_client's own checks) and return the completion message."""
    config = httpx.get(url + "config", timeout=timeout).json()
    (dependency,) = [item for item in config["dependencies"] if item.get("api_name") == api_name]
    session = uuid.uuid4().hex
    joined = httpx.post(f"{url}gradio_api/queue/join?{query}", timeout=timeout,
                        json={"data": data, "event_data": None, "fn_index": dependency["id"], "trigger_id": None,
                              "session_hash": session})
    joined.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session},
                      timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"{api_name} never completed")


def stylize_inputs(content: object, **changes) -> list:
    """The /stylize event's 26 inputs in order (content, style, 6 style-image slots, settings, catalogue,
    texture side, quality)."""
    values = {"content": content, "style_source": "preset", "preset": PRESET, "style_image_1": None,
              "style_weight_1": 1.0, "style_image_2": None, "style_weight_2": 1.0, "style_image_3": None,
              "style_weight_3": 1.0, "strength": 0.8, "preserve_color": False, "max_long_side": 0, "contrast": 1.0,
              "crop_left": 0, "crop_top": 0, "crop_right": 0, "crop_bottom": 0, "seed": 0, "title": "", "source_id": "",
              "rights": "", "notes": "", "tags": "", "approved": False, "texture_side": 640,
              "quality": "fast"} | changes
    return list(values.values())


def tree(folder: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, int]:
    """Every file under `folder` (relative path -> size), leaving out the `skip` folders."""
    return {path.relative_to(folder).as_posix(): path.stat().st_size for path in folder.rglob("*")
            if path.is_file() and not any(path.is_relative_to(skipped) for skipped in skip)}
