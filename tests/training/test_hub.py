"""Publishing to and pulling from the Hub, against the stand-in Hub of tests/helpers/hub_server.py.

`huggingface_hub` reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is first imported, so
every Hub client here is a fresh process with its environment set; this process only serves
the stand-in and compares what comes back. Nothing of `huggingface_hub` is mocked.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stylegan import Stylizer
from stylegan.generator import Generator
from tests.helpers.hub_server import COMMIT_ID, StandInHub

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_stand_in_token"
REPO = "archive-lab/tiny-style"
BROKEN_REPO = "archive-lab/missing-key"
PULLED_FILES = {"config.json", "model.safetensors", "presets.json", "presets.safetensors", "palettes.safetensors",
                "bands.safetensors", "preset_grams",
                "README.md", "sample_grid.png", "losses.png", "training.json"}

pytestmark = pytest.mark.slow

# Run in a fresh process: pull each job's model, write its weights and one output to a file.
PULL_SCRIPT = """
import json, sys
import torch
from safetensors.torch import save_file
from stylegan import Stylizer

report = {}
for job in json.loads(sys.argv[1]):
    try:
        stylizer = Stylizer.from_pretrained(job["repo"], revision=job["revision"], device="cpu")
    except Exception as error:
        report[job["name"]] = {"error": f"{type(error).__name__}: {error}"}
        continue
    content = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    code = stylizer.generator.blend(stylizer.style_code(min(stylizer.presets))[None], 0.8)
    with torch.no_grad():
        output = stylizer.generator(content, code)
    tensors = {"weights." + name: value.contiguous() for name, value in stylizer.generator.state_dict().items()}
    save_file({**tensors, "output": output}, job["out"])
    info = stylizer.model_info
    report[job["name"]] = {"repo": info.repo, "revision": info.revision, "path": info.path,
                           "weights_sha256": info.weights_sha256}
print(json.dumps(report))
"""

PUSH_SCRIPT = """
import json, sys
from training.hub import push_to_hub

v2_dir, broken_dir, repo, broken_repo = sys.argv[1:5]
report = {}
try:
    push_to_hub(v2_dir, repo, token="not-the-token")
except Exception as error:
    report["wrong_token"] = f"{type(error).__name__}: {error}"
report["v2"] = push_to_hub(v2_dir, repo, commit_message="second")
try:
    push_to_hub(v2_dir, repo, tag="v1")
except Exception as error:
    report["retag"] = f"{type(error).__name__}: {error}"
report["broken"] = push_to_hub(broken_dir, broken_repo, tag="v1")
print(json.dumps(report))
"""


def client_env(endpoint: str, hf_home: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_UPDATE_CHECK="1", PYTHONPATH=str(REPO_ROOT),
               HF_HUB_DISABLE_XET="1",  # large files by Git LFS, which the stand-in serves (not Xet)
               OMP_NUM_THREADS=str(torch.get_num_threads()))  # same threads as here: bit-equal outputs
    env.update(extra)
    return env


def run_client(arguments: list[str], env: dict[str, str]) -> str:
    process = subprocess.run([sys.executable, *arguments], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    return process.stdout


def commit_of(url: str) -> str:
    match = re.search(r"/commit/([0-9a-f]{40})$", url.strip())
    assert match, url
    return match.group(1)


@dataclass(frozen=True)
class Published:
    v1_dir: Path
    v2_dir: Path
    v1_commit: str
    v2_commit: str
    push_report: dict
    root: Path


@pytest.fixture(scope="module")
def hub():
    with StandInHub(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def published(hub, image_folders, tmp_path_factory) -> Published:
    """v1 trained and pushed by the CLI (`--push-to-hub --tag v1`); v2 the same export with other weights."""
    root = tmp_path_factory.mktemp("hub")
    env = client_env(hub.endpoint, root / "publisher-home")
    run_dir = root / "run"
    stdout = run_client(["-m", "training", "--content-dir", str(image_folders.content_dir),
                         "--style-dir", str(image_folders.style_dir), "--run-dir", str(run_dir), "--config", "tiny",
                         "--push-to-hub", REPO, "--tag", "v1"], env)
    v1_commit = commit_of(stdout.split("pushed to ")[-1])

    v2_dir = root / "export-v2"
    shutil.copytree(run_dir / "export", v2_dir)
    generator = Generator.from_pretrained(v2_dir, strict=True)
    with torch.no_grad():
        for parameter in generator.parameters():
            parameter.add_(0.05)
    generator.save_pretrained(v2_dir)  # new model.safetensors; the card stays

    broken_dir = root / "export-broken"
    shutil.copytree(run_dir / "export", broken_dir)
    weights = load_file(broken_dir / "model.safetensors")
    del weights["identity_code"]
    save_file(weights, broken_dir / "model.safetensors", metadata={"format": "pt"})

    report = json.loads(run_client(["-c", PUSH_SCRIPT, str(v2_dir), str(broken_dir), REPO, BROKEN_REPO], env)
                        .splitlines()[-1])
    return Published(run_dir / "export", v2_dir, v1_commit, commit_of(report["v2"]), report, root)


def pull(jobs: list[tuple[str, str, str]], env: dict[str, str], out_dir: Path) -> dict:
    """Run PULL_SCRIPT for (name, repo, revision) jobs; returns its report, with "out" paths added."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = [{"name": name, "repo": repo, "revision": revision, "out": str(out_dir / f"{name}.safetensors")}
               for name, repo, revision in jobs]
    report = json.loads(run_client(["-c", PULL_SCRIPT, json.dumps(payload)], env).splitlines()[-1])
    for job in payload:
        report[job["name"]]["out"] = job["out"]
    return report


@pytest.fixture(scope="module")
def pulled(hub, published) -> dict:
    env = client_env(hub.endpoint, published.root / "consumer-home")
    return pull([("v1", REPO, "v1"), ("main", REPO, "main"), ("broken", BROKEN_REPO, "v1")], env,
                published.root / "pulled")


def local_reference(folder: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Weights and the pull script's output for a local export folder, computed in this process."""
    stylizer = Stylizer.from_pretrained(folder, device="cpu")
    content = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    code = stylizer.generator.blend(stylizer.style_code(min(stylizer.presets))[None], 0.8)
    with torch.no_grad():
        return stylizer.generator.state_dict(), stylizer.generator(content, code)


def assert_same_model(pulled_file: str, weights: dict[str, torch.Tensor], output: torch.Tensor) -> None:
    tensors = load_file(pulled_file)
    pulled_weights = {name.removeprefix("weights."): value for name, value in tensors.items() if name != "output"}
    assert pulled_weights.keys() == weights.keys()
    assert all(torch.equal(pulled_weights[name], value) for name, value in weights.items())
    assert torch.equal(tensors["output"], output)


# -- publishing ----------------------------------------------------------------------------------
def test_push_makes_one_commit_per_export_and_a_tag(hub, published):
    repo = hub.repo(REPO)
    assert COMMIT_ID.fullmatch(published.v1_commit) and COMMIT_ID.fullmatch(published.v2_commit)
    assert published.v1_commit != published.v2_commit
    assert repo.tags == {"v1": published.v1_commit}
    assert repo.branches == {"main": published.v2_commit}
    v1, v2 = repo.commits[published.v1_commit], repo.commits[published.v2_commit]
    assert v2.parent == v1.oid and v2.message == "second"
    # A commit holds exactly the export folder (plus the repo's .gitattributes).
    exported = {path.relative_to(published.v1_dir).as_posix(): path.read_bytes()
                for path in published.v1_dir.rglob("*") if path.is_file()}
    assert {name.split("/")[0] for name in exported} == PULLED_FILES
    assert v1.files == {**exported, ".gitattributes": v1.files[".gitattributes"]}
    assert v2.files["model.safetensors"] == (published.v2_dir / "model.safetensors").read_bytes()
    assert v2.files["model.safetensors"] != v1.files["model.safetensors"]
    assert v2.files["README.md"] == v1.files["README.md"]
    assert hub.unhandled == []


def test_weights_travel_as_large_files_as_on_the_real_hub(hub, published, pulled):
    """Every *.safetensors went up through the LFS batch API to the storage server (the stand-in refuses
    one inside a commit) and came down from it by the Hub's redirect; nothing else touched the storage."""
    large = [(path, data) for repo in hub.state.repos.values() for commit in repo.commits.values()
             for path, data in commit.files.items() if path.endswith(".safetensors")]
    assert "model.safetensors" in dict(large)
    objects = {hashlib.sha256(data).hexdigest() for _, data in large}
    assert objects <= set(hub.state.large_objects)
    uploaded = {path.removeprefix("/objects/") for method, path in hub.storage_requests if method == "PUT"}
    downloaded = {path.removeprefix("/objects/") for method, path in hub.storage_requests if method == "GET"}
    assert objects <= uploaded  # each put once; a later export's unchanged objects are not sent again
    assert len(uploaded) == len([1 for method, _ in hub.storage_requests if method == "PUT"])
    assert hashlib.sha256(published.v1_dir.joinpath("model.safetensors").read_bytes()).hexdigest() in downloaded
    assert ("POST", f"/{REPO}.git/info/lfs/objects/batch") in hub.requests
    assert {path for method, path in hub.storage_requests} <= {f"/objects/{oid}" for oid in objects}
    assert hub.unhandled == []


def test_push_needs_the_token_and_never_moves_a_tag(hub, published):
    assert "401" in published.push_report["wrong_token"]
    assert "409" in published.push_report["retag"]
    assert hub.repo(REPO).tags == {"v1": published.v1_commit}
    assert hub.repo(BROKEN_REPO).tags["v1"] == commit_of(published.push_report["broken"])


# -- pulling -------------------------------------------------------------------------------------
def test_pull_pinned_to_v1_gets_v1_not_the_latest(published, pulled):
    v1 = pulled["v1"]
    assert "error" not in v1, v1
    assert v1["repo"] == REPO and v1["revision"] == published.v1_commit
    snapshot = Path(v1["path"])
    assert snapshot.name == published.v1_commit and snapshot.parent.name == "snapshots"
    assert {path.name for path in snapshot.iterdir()} == PULLED_FILES  # no .gitattributes, nothing else
    assert (snapshot / "README.md").read_bytes() == (published.v1_dir / "README.md").read_bytes()

    v1_weights, v1_output = local_reference(published.v1_dir)
    assert_same_model(v1["out"], v1_weights, v1_output)
    v2_weights, v2_output = local_reference(published.v2_dir)
    assert not torch.equal(v1_output, v2_output)  # pinning matters: main has other weights

    main = pulled["main"]
    assert main["revision"] == published.v2_commit
    assert_same_model(main["out"], v2_weights, v2_output)


def test_pull_offline_loads_the_pinned_model_from_the_cache(published, pulled):
    # No server at this address, and offline mode: only the HF_HOME cache filled above can answer.
    env = client_env("http://127.0.0.1:9", published.root / "consumer-home", HF_HUB_OFFLINE="1")
    offline = pull([("v1", REPO, "v1"), ("main", REPO, "main"), ("unknown", REPO, "v9")], env,
                   published.root / "offline")
    assert offline["v1"]["revision"] == published.v1_commit
    assert_same_model(offline["v1"]["out"], *local_reference(published.v1_dir))
    assert offline["main"]["revision"] == published.v2_commit
    assert "error" in offline["unknown"]  # never pulled: offline cannot invent it


def test_loading_is_strict_a_missing_key_raises(published, pulled, tmp_path):
    assert "identity_code" in pulled["broken"]["error"]
    assert "Missing key" in pulled["broken"]["error"]
    local = tmp_path / "broken"
    shutil.copytree(published.v1_dir, local)
    weights = load_file(local / "model.safetensors")
    del weights["to_residual.1.bias"]
    save_file(weights, local / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match=r"Missing key.*to_residual\.1\.bias"):
        Stylizer.from_pretrained(local, device="cpu")
