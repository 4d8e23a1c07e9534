"""`python -m archivist`: batch inputs, styles and weights, failures, no overwrites, provenance, torchrun split,
signed Content Credentials and `verify`."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import c2pa
import numpy as np
import pytest
from PIL import Image

from archivist.cli import UsageError, collect_inputs, default_credentials_dir, distributed_rank
from archivist.credentials import ENV_CERTS, ENV_KEY, SHA256_METADATA
from archivist.pipeline import output_name
from archivist.provenance import read_provenance

REPO = Path(__file__).resolve().parents[2]
PRESET = "hokusai_great_wave_off_kanagawa"


@pytest.fixture(autouse=True)
def credentials_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command line's self-issued identity lives under XDG_DATA_HOME: one for this session's tests."""
    home = tmp_path_factory.getbasetemp() / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", ENV_CERTS, ENV_KEY)}
    environment.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "archivist", *map(str, args)], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=300, check=False)


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 32), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode).save(path)
    return path


def sidecars(out_dir: Path) -> dict[str, dict]:
    """source name -> sidecar JSON of every result in `out_dir`."""
    records = [json.loads(path.read_text()) for path in sorted(out_dir.glob("*.json"))]
    return {find_value(record, "source_name"): record for record in records}


def find_value(record: object, key: str) -> object:
    """The first value stored under `key` anywhere in a nested JSON record."""
    if isinstance(record, dict):
        if key in record:
            return record[key]
        record = list(record.values())
    if isinstance(record, list):
        for value in record:
            found = find_value(value, key)
            if found is not None:
                return found
    return None


def results(out_dir: Path) -> list[Path]:
    return sorted(path for path in out_dir.iterdir() if path.suffix != ".json")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """scans/ with two good images (one nested), a broken one in the middle, and loose/ for a glob."""
    write_image(tmp_path / "scans" / "a_letter.png", seed=1)
    (tmp_path / "scans" / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    write_image(tmp_path / "scans" / "nested" / "c_map.jpg", seed=2, size=(36, 28))
    write_image(tmp_path / "loose" / "d_photo.png", seed=3, size=(24, 40), mode="L")
    (tmp_path / "loose" / "notes.txt").write_text("not an image, and not matched by the glob below")
    write_image(tmp_path / "style.png", seed=4, size=(32, 32))
    return tmp_path


@pytest.mark.slow
def test_batch_goes_past_a_bad_file_and_lists_every_failure(inputs: Path) -> None:
    out = inputs / "out"
    before = {path: path.read_bytes() for path in inputs.rglob("*") if path.is_file()}
    result = run_cli("stylize", inputs / "scans", inputs / "loose" / "*.png", inputs / "missing.jpg",
                     "--style", PRESET, "--weight", "0.7", "--style", inputs / "style.png", "--weight", "0.3",
                     "--strength", "0.9", "--out", out)
    assert result.returncode == 1, result.stderr
    assert {path.name for path in results(out)} == {"a_letter.stylized.png", "c_map.stylized.png",
                                                    "d_photo.stylized.png"}
    failures = result.stderr.split("failure(s):")[1]
    assert "b_broken.png: " in failures and "missing.jpg: no such file" in failures
    assert len(failures.strip().splitlines()) == 2
    assert sorted(Path(line).name for line in result.stdout.split()) == [path.name for path in results(out)]
    assert Image.open(out / "d_photo.stylized.png").mode == "L"  # grayscale stays grayscale
    assert Image.open(out / "c_map.stylized.png").size == (36, 28)
    assert all(path.read_bytes() == data for path, data in before.items())  # inputs untouched


@pytest.mark.slow
def test_output_carries_provenance(inputs: Path) -> None:
    out = inputs / "out"
    result = run_cli("stylize", inputs / "scans" / "a_letter.png", "--style", PRESET, "--style", inputs / "style.png",
                     "--weight", "2", "--weight", "1", "--strength", "0.6", "--seed", "7", "--format", "jpg",
                     "--texture-side", "96", "--out", out)
    assert result.returncode == 0, result.stderr
    (output,) = results(out)
    assert output.name == "a_letter.stylized.jpg" and Image.open(output).format == "JPEG"
    record = sidecars(out)["a_letter.png"]
    source_hash = hashlib.sha256((inputs / "scans" / "a_letter.png").read_bytes()).hexdigest()
    assert find_value(record, "source_sha256") == source_hash
    assert find_value(record, "style_strength") == 0.6 and find_value(record, "seed") == 7
    text = json.dumps(record)
    assert PRESET in text and hashlib.sha256((inputs / "style.png").read_bytes()).hexdigest() in text
    assert "bundled" in text  # the model it came from
    assert find_value(record, "styles") == [PRESET, "style.png"]
    assert find_value(record, "texture_side") == 96
    assert read_provenance(output).to_dict() == record  # embedded in the JPEG too
    assert (out / "a_letter.stylized.jpg.json").exists()

    # Signed Content Credentials, as any C2PA reader sees them.
    with c2pa.Reader("image/jpeg", io.BytesIO(output.read_bytes())) as reader:
        assert reader.get_validation_state() == "Valid"
        failures = reader.get_validation_results()["activeManifest"]["failure"]
        manifest = reader.get_active_manifest()
    assert [failure["code"] for failure in failures] == ["signingCredential.untrusted"]  # self-issued
    assert manifest["signature_info"]["issuer"] == "archive-style GAN (self-issued)"
    (actions,) = [item["data"]["actions"] for item in manifest["assertions"] if item["label"] == "c2pa.actions.v2"]
    assert [action["action"] for action in actions] == ["c2pa.opened", "c2pa.filtered"]
    assert actions[1]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    parents, components = ([item["title"] for item in manifest["ingredients"] if item["relationship"] == relationship]
                           for relationship in ("parentOf", "componentOf"))
    assert parents == ["a_letter.png"] and len(components) == 2 and "style.png" in components
    assert any(title.startswith(f"preset {PRESET}: Under the Wave") for title in components)
    parent = next(item for item in manifest["ingredients"] if item["relationship"] == "parentOf")
    assert parent["metadata"][SHA256_METADATA] == source_hash

    copy = out / "copy.jpg"  # `verify` says the same, and sees a changed byte of the pixel data
    data = bytearray(output.read_bytes())
    data[len(data) - 300] ^= 0x01  # in the entropy-coded scan, which ends the file (before EOI)
    copy.write_bytes(bytes(data))
    verified = run_cli("verify", output, copy)
    assert verified.returncode == 1, verified.stderr
    assert f"{output}: Valid: unchanged since it was signed by archive-style GAN self-issued signer" in verified.stdout
    assert f"{copy}: Invalid:" in verified.stdout and "action: c2pa.filtered" in verified.stdout
    assert run_cli("verify", output).returncode == 0


@pytest.mark.slow
def test_never_overwrites_results_or_inputs(inputs: Path) -> None:
    out = inputs / "out"
    source = inputs / "scans" / "a_letter.png"
    assert run_cli("stylize", source, "--style", PRESET, "--out", out).returncode == 0
    first = (out / "a_letter.stylized.png").read_bytes()
    second = run_cli("stylize", source, "--style", PRESET, "--strength", "0.3", "--out", out)
    assert second.returncode == 0, second.stderr
    assert [path.name for path in results(out)] == ["a_letter.stylized-1.png", "a_letter.stylized.png"]
    assert (out / "a_letter.stylized.png").read_bytes() == first
    # A folder input that contains the output folder: earlier results are not taken as inputs.
    for _ in range(2):
        again = run_cli("stylize", inputs / "scans", "--style", PRESET, "--out", inputs / "scans" / "stylized")
        assert again.returncode == 1 and "2 of 3 image(s) written" in again.stderr  # b_broken.png fails
    assert len(results(inputs / "scans" / "stylized")) == 4
    # --out naming an input file is refused before anything is written.
    original = source.read_bytes()
    refused = run_cli("stylize", source, "--style", PRESET, "--out", source)
    assert refused.returncode == 2 and "existing file" in refused.stderr
    assert source.read_bytes() == original


@pytest.mark.slow
def test_usage_errors_exit_2(inputs: Path) -> None:
    source = inputs / "scans" / "a_letter.png"
    unknown = run_cli("stylize", source, "--style", "no_such_style", "--out", inputs / "out")
    assert unknown.returncode == 2 and "neither an image file nor a preset" in unknown.stderr
    mismatch = run_cli("stylize", source, "--style", PRESET, "--weight", "1", "--weight", "2", "--out", inputs / "o")
    assert mismatch.returncode == 2 and "one weight per style" in mismatch.stderr
    optimize_preset = run_cli("stylize", source, "--style", PRESET, "--mode", "optimize", "--out", inputs / "o")
    assert optimize_preset.returncode == 2 and "needs them: upload the artwork as a style image" in optimize_preset.stderr
    assert run_cli("stylize", source, "--out", inputs / "o").returncode == 2  # argparse: --style is required
    tiny_texture = run_cli("stylize", source, "--style", PRESET, "--texture-side", "8", "--out", inputs / "o")
    assert tiny_texture.returncode == 2 and "texture_side must be between 64" in tiny_texture.stderr
    too_strong = run_cli("stylize", source, "--style", PRESET, "--strength", "1.5", "--out", inputs / "o")
    assert too_strong.returncode == 2 and "strength must be in [0, 1], got 1.5" in too_strong.stderr
    no_key = run_cli("stylize", source, "--style", PRESET, "--out", inputs / "o",
                     env={ENV_CERTS: str(inputs / "missing-chain.pem")})
    assert no_key.returncode == 2 and f"{ENV_CERTS} and {ENV_KEY} go together" in no_key.stderr
    unreadable = run_cli("stylize", source, "--style", PRESET, "--out", inputs / "o",
                         env={ENV_CERTS: str(inputs / "missing-chain.pem"), ENV_KEY: str(inputs / "missing-key.pem")})
    assert unreadable.returncode == 2 and "missing-chain.pem" in unreadable.stderr
    assert not (inputs / "out").exists() and not (inputs / "o").exists()


@pytest.mark.slow
def test_optimize_mode_from_the_command_line(inputs: Path) -> None:
    out = inputs / "out"
    result = run_cli("stylize", inputs / "loose" / "d_photo.png", "--style", inputs / "style.png", "--mode", "optimize",
                     "--steps", "2", "--seed", "3", "--max-long-side", "32", "--out", out)
    assert result.returncode == 0, result.stderr
    (output,) = results(out)
    assert Image.open(output).size == (19, 32)
    assert find_value(sidecars(out)["d_photo.png"], "steps") == 2


@pytest.mark.slow
def test_best_quality_from_the_command_line(inputs: Path) -> None:
    out = inputs / "best"
    result = run_cli("stylize", inputs / "loose" / "d_photo.png", "--style", inputs / "style.png", "--quality", "best",
                     "--steps", "3", "--out", out)
    assert result.returncode == 0, result.stderr
    (output,) = results(out)
    assert Image.open(output).size == (24, 40) and Image.open(output).mode == "L"
    record = sidecars(out)["d_photo.png"]
    assert (find_value(record, "quality"), find_value(record, "steps"), find_value(record, "working_size")) == (
        "best", 3, [24, 40])
    source = inputs / "scans" / "a_letter.png"
    preset = run_cli("stylize", source, "--style", PRESET, "--quality", "best", "--out", inputs / "o")
    if preset.returncode == 2:  # a model exported without its presets' style images
        assert "--quality best needs a style image" in preset.stderr
    else:
        assert preset.returncode == 0, preset.stderr
    both = run_cli("stylize", source, "--style", inputs / "style.png", "--quality", "best", "--mode", "optimize",
                   "--out", inputs / "o")
    assert both.returncode == 2 and "none to refine" in both.stderr
    steps_alone = run_cli("stylize", source, "--style", inputs / "style.png", "--steps", "3", "--out", inputs / "o")
    assert steps_alone.returncode == 2 and "steps only apply to quality='best'" in steps_alone.stderr


@pytest.mark.slow
def test_presets_lists_names_with_attribution() -> None:
    result = run_cli("presets")
    assert result.returncode == 0, result.stderr
    assert PRESET in result.stdout and "Hokusai" in result.stdout and "Public domain" in result.stdout
    assert "Loading" not in result.stdout  # stdout holds the list only
    assert len([line for line in result.stdout.splitlines() if not line.startswith(" ")]) == 32


@pytest.mark.slow
def test_torchrun_ranks_take_disjoint_halves(tmp_path: Path) -> None:
    for index in range(5):
        write_image(tmp_path / "scans" / f"page_{index}.png", seed=index, size=(16, 16))
    out = tmp_path / "out"
    runs = [run_cli("stylize", tmp_path / "scans", "--style", PRESET, "--out", out,
                    env={"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)}) for rank in range(2)]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    taken = [{Path(line).name for line in run.stdout.split()} for run in runs]
    assert len(taken[0]) == 3 and len(taken[1]) == 2 and not taken[0] & taken[1]
    assert taken[0] | taken[1] == {f"page_{index}.stylized.png" for index in range(5)}
    assert {path.name for path in results(out)} == taken[0] | taken[1]


def test_collect_inputs_expands_folders_and_globs(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "sub/c.tif", "out/old.png", "b.stylized.png"):
        write_image(tmp_path / name, seed=0, size=(8, 8))
    (tmp_path / "b.stylized.png.json").write_text("{}")  # a provenance sidecar marks an earlier result
    (tmp_path / "readme.txt").write_text("skip me")
    paths, failures = collect_inputs([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "empty*"),
                                      str(tmp_path / "readme.txt")], exclude=tmp_path / "out")
    assert [path.relative_to(tmp_path).as_posix() for path in paths] == ["a.JPG", "b.png", "sub/c.tif", "readme.txt"]
    assert failures == [(str(tmp_path / "empty*"), "pattern matches no image files")]
    # Writing into the input folder itself: its images are still inputs, earlier results are not.
    paths, failures = collect_inputs([str(tmp_path)], exclude=tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path in paths] == ["a.JPG", "b.png", "out/old.png", "sub/c.tif"]
    paths, failures = collect_inputs([str(tmp_path / "nothing-here.png")], exclude=tmp_path / "out")
    assert paths == [] and failures == [(str(tmp_path / "nothing-here.png"), "no such file or folder")]


def test_the_self_issued_identity_lives_outside_any_output_folder(credentials_home: Path) -> None:
    assert default_credentials_dir({"XDG_DATA_HOME": str(credentials_home)}) == \
        credentials_home / "archive-style-gan" / "credentials"
    assert default_credentials_dir({}) == Path.home() / ".local" / "share" / "archive-style-gan" / "credentials"


def test_distributed_rank_and_output_names() -> None:
    assert distributed_rank({}) == (0, 1)
    assert distributed_rank({"RANK": "1", "WORLD_SIZE": "4"}) == (1, 4)
    with pytest.raises(UsageError, match="RANK"):
        distributed_rank({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UsageError, match="integers"):
        distributed_rank({"RANK": "0"})
    assert output_name(Path("x/page.tif"), 0, ".png") == "page.stylized.png"
    assert output_name(Path("x/page.tif"), 2, ".png") == "page.stylized-2.png"
