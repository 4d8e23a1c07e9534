"""The app served in-process and driven through its real API with gradio_client (no browser)."""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import c2pa
import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import app
from archivist.archive import Archive
from archivist.credentials import ENV_CERTS, ENV_KEY, KEY_FILE, SHA256_METADATA, WEIGHT_METADATA
from archivist.pipeline import ScaledProgress
from archivist.provenance import read_provenance, sha256_bytes
from benchmarks.load_app import free_port
from stylegan.inference import Stylizer
from stylegan.optimize import REFINE_STEPS
from tests.helpers.required import required_import

gradio_client = required_import("gradio_client")
RIGHTS = "http://rightsstatements.org/vocab/NoC-US/1.0/"
ROOT = Path(__file__).resolve().parents[2]


def write_image(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 6.28, 3)
    pixels = np.stack([0.5 + 0.4 * np.sin(9 * x + 5 * y + phase) for phase in phases], -1)
    pixels = (pixels + rng.normal(0, 0.05, pixels.shape)).clip(0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture(scope="module")
def stylizer() -> Stylizer:
    stylizer = Stylizer.from_pretrained(device="cpu")
    # The bundled interim model may still be untrained, and an untrained model's style modulation
    # is zero-initialised (every style gives the same image). Seeded random modulation weights make
    # style and strength change the pixels, which is what these tests check (not quality).
    torch.nn.init.normal_(stylizer.generator.to_modulation.weight, std=0.05,
                          generator=torch.Generator().manual_seed(0))
    return stylizer


@pytest.fixture(scope="module")
def served(stylizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    archive = Archive(root / "archive")
    demo = app.build_demo(stylizer, archive)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            **app.launch_options(archive))
    client = gradio_client.Client(url, analytics_enabled=False, verbose=False, download_files=str(root / "downloads"))
    images = {name: write_image(root / f"{name}.png", seed) for seed, name in enumerate(["scan", "style_a", "style_b"])}
    yield demo, client, archive, images, url
    client.close()
    demo.close()


def stylize(client, content: Path, **options):
    arguments = {"content": gradio_client.handle_file(str(content)), "style_source": "preset",
                 "preset": "hokusai_great_wave_off_kanagawa", "strength": 0.8, "title": "Test scan",
                 "source_id": "ACC-1", "rights": RIGHTS, "notes": "notes", "tags": "letters, 1917", "approved": True}
    return client.predict(**(arguments | options), api_name="/stylize")


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_stylize_with_a_preset_archives_an_entry_with_every_field(served):
    _, client, archive, images, _ = served
    (before, after), result, entry, status = stylize(client, images["scan"], crop_left=10, contrast=1.2, seed=5,
                                                     texture_side=384)
    assert entry["id"] in status and f"?entry={entry['id']}" in status
    assert Path(before).exists() and Path(after).exists()
    assert pixels(before).shape == pixels(after).shape
    assert {key: entry[key] for key in ("title", "source_id", "rights", "notes", "tags", "approved")} == {
        "title": "Test scan", "source_id": "ACC-1", "rights": RIGHTS, "notes": "notes", "tags": ["letters", "1917"],
        "approved": True}
    record = entry["provenance"]
    assert record["style"] == "preset:hokusai_great_wave_off_kanagawa" and record["style_strength"] == 0.8
    assert record["seed"] == 5 and record["settings"]["contrast"] == 1.2
    assert record["settings"]["crop"]["left"] == 0.1 and record["settings"]["max_long_side"] is None
    assert record["settings"]["texture_side"] == 384
    assert record["source_sha256"] == sha256_bytes(images["scan"].read_bytes())
    assert record["source_name"] == "scan.png"
    assert record["model_repo"] == "bundled" and len(record["weights_sha256"]) == 64
    # The download is the full-resolution result (cropped 10 % on the left) with the provenance embedded.
    with Image.open(result) as image:
        assert image.size == (64 - 6, 48)
    assert read_provenance(result).to_dict() == record
    stored = archive.get(entry["id"])
    assert archive.path(stored.original_file).read_bytes() == images["scan"].read_bytes()
    assert stored.to_dict() == entry


def test_strength_and_uploaded_styles_change_the_result(served):
    _, client, _, images, _ = served
    _, weak, _, _ = stylize(client, images["scan"], strength=0.0, approved=False)
    _, strong, _, _ = stylize(client, images["scan"], strength=1.0, approved=False)
    assert np.abs(pixels(weak) - pixels(strong)).mean() > 1.0
    _, blended, entry, _ = stylize(client, images["scan"], style_source="images", strength=1.0, approved=False,
                                   style_image_1=gradio_client.handle_file(str(images["style_a"])), style_weight_1=1.0,
                                   style_image_2=gradio_client.handle_file(str(images["style_b"])), style_weight_2=0.5)
    style = entry["provenance"]["style"]
    assert style.startswith("blend:") and json.loads(style.removeprefix("blend:")) == [
        [f"sha256:{sha256_bytes(images['style_a'].read_bytes())}", 1.0],
        [f"sha256:{sha256_bytes(images['style_b'].read_bytes())}", 0.5]]
    assert np.abs(pixels(blended) - pixels(strong)).mean() > 1.0


def test_best_quality_shows_the_network_result_then_refined_ones_and_archives_the_last(served):
    _, client, archive, images, _ = served
    count = len(archive.search())
    job = client.submit(content=gradio_client.handle_file(str(images["scan"])), style_source="images",
                        style_image_1=gradio_client.handle_file(str(images["style_a"])), strength=0.9,
                        title="Refined", rights=RIGHTS, quality="best", api_name="/stylize")
    (_, after), result, entry, status = job.result()
    drafts = job.outputs()[:-1]
    assert len(drafts) >= 2 and "showing the network's result" in drafts[0][3]
    assert "refined result 1" in drafts[1][3] and all(draft[1] is None and draft[2] is None for draft in drafts)
    assert pixels(drafts[0][0][1]).shape == pixels(after).shape
    assert np.abs(pixels(drafts[0][0][1]) - pixels(after)).mean() > 0.5  # the refinement changed the picture
    assert entry["id"] in status and len(archive.search()) == count + 1  # one entry: the finished result
    settings = entry["provenance"]["settings"]
    assert (settings["quality"], settings["steps"], settings["working_size"]) == ("best", REFINE_STEPS, [64, 48])
    assert read_provenance(result).to_dict() == entry["provenance"]
    _, _, fast_entry, _ = stylize(client, images["scan"], approved=False)
    assert fast_entry["provenance"]["settings"]["quality"] == "fast"
    assert "steps" not in fast_entry["provenance"]["settings"]


def test_search_edit_and_delete_through_the_api(served):
    _, client, archive, images, _ = served
    _, _, entry, _ = stylize(client, images["scan"], title="Harbour survey 1888", tags="maps, harbour",
                             approved=False)
    found = client.predict(text="harbour survey", api_name="/archive_search")
    assert [item["id"] for item in found] == [entry["id"]]
    assert [item["id"] for item in client.predict(tag="maps", api_name="/archive_search")] == [entry["id"]]
    assert entry["id"] in [item["id"] for item in client.predict(style="hokusai", approved="no",
                                                                 api_name="/archive_search")]
    assert entry["id"] not in [item["id"] for item in client.predict(approved="yes", api_name="/archive_search")]
    today = entry["created"][:10]
    assert entry["id"] in [item["id"] for item in client.predict(date_from=today, date_to=today,
                                                                 api_name="/archive_search")]
    assert client.predict(entry_id=entry["id"], api_name="/entry_get") == entry

    updated = client.predict(entry_id=entry["id"], title="Harbour survey, 1888", approved=True,
                             rights="https://creativecommons.org/publicdomain/mark/1.0/", api_name="/entry_update")
    assert updated["title"] == "Harbour survey, 1888" and updated["approved"] and updated["tags"] == ["maps", "harbour"]
    reopened = Archive(archive.root).get(entry["id"])  # persisted, as a new process would see it
    assert reopened.catalogue.title == "Harbour survey, 1888" and reopened.catalogue.approved
    with pytest.raises(gradio_client.exceptions.AppError, match="not a RightsStatements.org URI"):
        client.predict(entry_id=entry["id"], rights="all rights reserved", api_name="/entry_update")

    files = {kind: archive.path(name) for kind, name in entry["files"].items()}
    with pytest.raises(gradio_client.exceptions.AppError, match="confirm=True"):
        client.predict(entry_id=entry["id"], api_name="/entry_delete")
    assert all(path.exists() for path in files.values())
    deleted = client.predict(entry_id=entry["id"], confirm=True, api_name="/entry_delete")
    assert deleted["deleted"] == entry["id"]
    assert not files["result"].exists() and not files["thumbnail"].exists()
    assert files["original"].exists()  # other entries were made from the same scan
    with pytest.raises(gradio_client.exceptions.AppError, match="no entry"):
        client.predict(entry_id=entry["id"], api_name="/entry_get")


def test_export_zip_holds_approved_entries_with_dublin_core_and_iiif(served):
    _, client, archive, images, url = served
    _, _, approved, _ = stylize(client, images["scan"], title="=cmd|' /C calc'!A0", approved=True)
    _, _, draft, _ = stylize(client, images["scan"], title="draft", approved=False)
    zip_path = client.predict(entry_ids=[], api_name="/export")
    with zipfile.ZipFile(zip_path) as bundle:
        names = bundle.namelist()
        rows = list(csv.DictReader(io.StringIO(bundle.read("metadata.csv").decode())))
        manifest = json.loads(bundle.read("manifest.json"))
        assert read_provenance(bundle.read(f"results/{approved['id']}.png")).to_dict() == approved["provenance"]
    assert f"results/{approved['id']}.png" in names and f"results/{draft['id']}.png" not in names
    assert f"results/{approved['id']}.png.json" in names and not any(name.startswith("originals/") for name in names)
    assert {row["dc.identifier"] for row in rows} == {entry.id for entry in archive.search(approved=True)}
    row = next(row for row in rows if row["dc.identifier"] == approved["id"])
    assert row["dc.title"] == "'" + approved["title"] and row["dc.rights"] == RIGHTS
    assert manifest["type"] == "Manifest" and manifest["id"].startswith(url.rstrip("/") + "/iiif/")
    assert approved["id"] in {canvas["id"].rsplit("/", 1)[-1] for canvas in manifest["items"]}

    with pytest.raises(gradio_client.exceptions.AppError, match="not approved for sharing"):
        client.predict(entry_ids=[draft["id"]], api_name="/export")
    chosen = client.predict(entry_ids=[draft["id"]], include_unapproved=True, include_originals=True,
                            base_url="https://example.org/pub/", api_name="/export")
    with zipfile.ZipFile(chosen) as bundle:
        assert f"results/{draft['id']}.png" in bundle.namelist()
        assert f"originals/{draft['provenance']['source_sha256']}.png" in bundle.namelist()
        assert json.loads(bundle.read("manifest.json"))["id"] == "https://example.org/pub/manifest.json"


def c2pa_manifest(data: bytes) -> tuple[str, list[str], dict]:
    """(validation state, codes of the failed checks, active manifest) as c2pa itself reads a PNG."""
    with c2pa.Reader("image/png", io.BytesIO(data)) as reader:
        failures = reader.get_validation_results()["activeManifest"]["failure"]
        return reader.get_validation_state(), [failure["code"] for failure in failures], reader.get_active_manifest()


def test_a_downloaded_result_verifies_and_the_app_shows_its_credentials(served, tmp_path):
    _, client, archive, images, url = served
    style_a, style_b = (gradio_client.handle_file(str(images[name])) for name in ("style_a", "style_b"))
    _, result, entry, _ = stylize(client, images["scan"], style_source="images", style_image_1=style_a,
                                  style_weight_1=1.0, style_image_2=style_b, style_weight_2=0.5, approved=True)
    downloaded = Path(result).read_bytes()  # what gradio_client fetched over HTTP
    state, failures, manifest = c2pa_manifest(downloaded)
    assert state == "Valid" and failures == ["signingCredential.untrusted"]  # the archive's self-issued identity
    (actions,) = [item["data"]["actions"] for item in manifest["assertions"] if item["label"] == "c2pa.actions.v2"]
    assert [action["action"] for action in actions] == ["c2pa.opened", "c2pa.filtered"]
    assert actions[1]["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    ingredients = {item["title"]: item for item in manifest["ingredients"]}
    assert ingredients["scan.png"]["relationship"] == "parentOf"
    assert ingredients["scan.png"]["metadata"][SHA256_METADATA] == sha256_bytes(images["scan"].read_bytes())
    assert [(ingredients[name]["relationship"], ingredients[name]["metadata"][WEIGHT_METADATA])
            for name in ("style_a.png", "style_b.png")] == [("componentOf", 1.0), ("componentOf", 0.5)]

    summary, report = client.predict(file=gradio_client.handle_file(result), api_name="/credentials")
    assert report["state"] == "Valid" and report["valid"] and "Content Credentials: Valid" in summary
    assert "self\\-issued" in summary and "scan\\.png" in summary  # shown as text, escaped for Markdown
    tampered = tmp_path / "tampered.png"
    pixels = bytearray(downloaded)
    pixels[downloaded.rindex(b"IDAT") + 8] ^= 0x01  # a byte of the compressed pixels
    tampered.write_bytes(bytes(pixels))
    summary, report = client.predict(file=gradio_client.handle_file(str(tampered)), api_name="/credentials")
    assert report["state"] == "Invalid" and "Content Credentials: Invalid" in summary
    _, report = client.predict(file=gradio_client.handle_file(str(images["scan"])), api_name="/credentials")
    assert report["state"] == "none"

    outputs = run_page_load(url, f"entry={entry['id']}")  # the entry view shows them too
    assert any("Content Credentials: Valid" in json.dumps(value) for value in outputs)
    zip_path = client.predict(entry_ids=[entry["id"]], api_name="/export")
    with zipfile.ZipFile(zip_path) as bundle:  # exported byte for byte: the manifest holds
        assert bundle.read(entry["files"]["result"]) == downloaded
    assert archive.path(entry["files"]["result"]).read_bytes() == downloaded


def run_page_load(url: str, query: str) -> list:
    """What the browser does on opening `url?query`: the load event, with the page's query string."""
    config = httpx.get(url + "config").json()
    (dependency,) = [item for item in config["dependencies"] if item.get("api_name") == "page_load"]
    session = uuid.uuid4().hex
    joined = httpx.post(f"{url}gradio_api/queue/join?{query}",
                        json={"data": [], "event_data": None, "fn_index": dependency["id"],
                              "trigger_id": None, "session_hash": session})
    joined.raise_for_status()
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    assert message["success"], message
                    return message["output"]["data"]
    raise AssertionError("the load event never completed")


def test_permalink_opens_the_entry(served):
    _, client, _, images, url = served
    _, _, entry, _ = stylize(client, images["scan"], title="Permalinked")
    page = httpx.get(f"{url}?entry={entry['id']}")
    assert page.status_code == 200 and "<html" in page.text.lower()
    outputs = run_page_load(url, f"entry={entry['id']}")
    assert entry["id"] in json.dumps(outputs)
    assert any(isinstance(value, dict) and value.get("value", value).get("id") == entry["id"]
               for value in outputs if isinstance(value, dict) and isinstance(value.get("value", value), dict))
    without = run_page_load(url, "")
    assert f'"id": "{entry["id"]}"' not in json.dumps(without)


def test_bad_uploads_get_a_clear_error_and_the_app_keeps_serving(served, stylizer, tmp_path):
    _, client, _, images, _ = served
    bogus = tmp_path / "letter.png"
    bogus.write_bytes(b"this is not an image at all")
    with pytest.raises(gradio_client.exceptions.AppError, match=r"letter\.png: .*image"):
        stylize(client, bogus)
    with pytest.raises(gradio_client.exceptions.AppError, match="strength"):
        stylize(client, images["scan"], strength=1.5)
    with pytest.raises(gradio_client.exceptions.AppError, match="style image"):
        stylize(client, images["scan"], style_source="images")
    with pytest.raises(gradio_client.exceptions.AppError, match="RightsStatements"):
        stylize(client, images["scan"], rights="free to use")
    assert [preset["name"] for preset in client.predict(api_name="/presets")] == list(stylizer.presets)
    _, _, entry, _ = stylize(client, images["scan"], title="after the errors")
    assert entry["title"] == "after the errors"


def test_batch_archives_images_and_refuses_the_rest(served, tmp_path):
    _, client, archive, images, _ = served
    bundle = tmp_path / "box.zip"
    with zipfile.ZipFile(bundle, "w") as archive_zip:
        archive_zip.writestr("folder/page1.png", images["style_a"].read_bytes())
        archive_zip.writestr("../../escape.png", images["style_b"].read_bytes())
        archive_zip.writestr("readme.txt", b"hello")
    summary, report, gallery = client.predict(
        files=[gradio_client.handle_file(str(bundle)), gradio_client.handle_file(str(images["scan"]))],
        style_source="preset", preset="munch_the_scream", strength=0.5, rights=RIGHTS, tags="batch", approved=True,
        api_name="/batch")
    assert [entry["title"] for entry in report["archived"]] == ["page1", "scan"]
    assert all(archive.get(entry["id"]).catalogue.tags == ("batch",) for entry in report["archived"])
    reasons = {refusal["name"]: refusal["reason"] for refusal in report["refused"]}
    assert "zip slip" in reasons["box.zip/../../escape.png"]
    assert "not" in reasons["box.zip/readme.txt"]
    assert "2 archived, 2 refused" in summary and len(gallery) == 2


def test_files_are_served_from_the_archive_only(served):
    demo, _, archive, _, url = served
    assert sorted(demo.allowed_paths) == sorted(str(path) for path in archive.served_dirs)
    assert demo.max_file_size == 300 * 1024 * 1024
    for secret in (archive.database, archive.root / "credentials" / KEY_FILE, Path(__file__)):
        assert httpx.get(f"{url}gradio_api/file={secret}").status_code in (403, 404)


def test_previews_are_whole_files_that_a_repeat_never_rewrites_in_place(tmp_path):
    """Gradio rewrote a returned PIL image's content-addressed cache file in place, truncating it
    under a concurrent download of the same picture; the app returns atomically written files."""
    server = app.Handlers(stylizer=None, archive=Archive(tmp_path / "archive"))
    picture = Image.new("RGB", (40, 30), (200, 120, 40))
    first = server.preview_files((picture, picture), "entry-1")
    first_bytes = [Path(path).read_bytes() for path in first]
    second = server.preview_files((picture, picture), "entry-2")
    assert set(first).isdisjoint(second)  # a repeat writes new files and leaves the earlier ones alone
    assert [Path(path).read_bytes() for path in first] == first_bytes
    for path in (*first, *second):
        assert Image.open(path).size == (40, 30)
    assert sorted(p.name for p in server.preview_dir.iterdir()) == sorted(Path(p).name for p in (*first, *second))
    old = Path(first[0])
    os.utime(old, (0, 0))  # older than PREVIEW_MAX_AGE: swept by the next write
    server.preview_files((picture, picture), "entry-3")
    assert not old.exists() and Path(first[1]).exists()


def test_progress_can_cross_into_a_zerogpu_worker():
    # ZeroGPU pickles the device function's arguments into a worker process: no closures allowed.
    progress = ScaledProgress(app.GradioProgress(app.gr.Progress()), 0.5, 0.25, "2/4 scan.tif: ")
    assert pickle.loads(pickle.dumps(progress)).prefix == "2/4 scan.tif: "


def test_auth_setting():
    assert app.parse_auth("") is None
    assert app.parse_auth("ann:pw1, bob:p:w2") == [("ann", "pw1"), ("bob", "p:w2")]
    with pytest.raises(SystemExit, match="ARCHIVE_AUTH"):
        app.parse_auth("ann")


def test_unreachable_hub_falls_back_to_the_bundled_model(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("STYLE_MODEL_REPO", f"org/not-cached-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("STYLE_MODEL_REVISION", "0" * 40)
    stylizer, notice = app.load_stylizer()
    assert stylizer.model_info.repo == "bundled"
    assert "could not be reached" in notice and "bundled model" in notice
    demo = app.build_demo(stylizer, Archive(tmp_path / "archive"), model_notice=notice)
    shown = " ".join(block.value or "" for block in demo.blocks.values() if isinstance(block, app.gr.Markdown))
    assert "could not be reached" in shown and f"`bundled` at revision `{stylizer.model_info.revision}`" in shown
    assert "signed with Content Credentials by a self\\-issued identity" in shown
    monkeypatch.delenv("STYLE_MODEL_REVISION")
    with pytest.raises(SystemExit, match="STYLE_MODEL_REVISION"):
        app.load_stylizer()


@pytest.mark.slow
def test_a_broken_signing_identity_stops_the_app_at_start_up(tmp_path):
    env = {**os.environ, "ARCHIVE_DIR": str(tmp_path / "archive"), ENV_CERTS: str(tmp_path / "chain.pem"),
           ENV_KEY: str(tmp_path / "key.pem"), "GRADIO_SERVER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"}
    env.pop("STYLE_MODEL_REPO", None)
    completed = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=300, check=False)
    assert completed.returncode == 1
    assert f"Content Credentials: {ENV_CERTS}: cannot read" in completed.stderr and "chain.pem" in completed.stderr
    assert "Running on" not in completed.stdout + completed.stderr  # it never served


@pytest.mark.slow
def test_a_hub_model_loads_pinned_to_its_commit(tmp_path):
    from tests.helpers.hub_server import StandInHub

    model_dir = ROOT / "stylegan" / "default_model"
    with StandInHub() as hub:
        repo = hub.state.create_repo("museum/archive-style", private=False)
        commit = hub.state.commit(repo, "main", "model", None,
                                  [("file", path.relative_to(model_dir).as_posix(), path.read_bytes())
                                   for path in model_dir.rglob("*") if path.is_file()])
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf"),
               "STYLE_MODEL_REPO": "museum/archive-style", "STYLE_MODEL_REVISION": commit.oid, "OMP_NUM_THREADS": "1"}
        script = ("import json, app; stylizer, notice = app.load_stylizer(); "
                  "print(json.dumps([stylizer.model_info.repo, stylizer.model_info.revision, notice]))")
        completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr
    repo_id, revision, notice = json.loads(completed.stdout.strip().splitlines()[-1])
    assert (repo_id, revision, notice) == ("museum/archive-style", commit.oid, "")
    # The stand-in is gone: offline, the same pinned model loads from the cache the first run filled.
    offline = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"},
                             capture_output=True, text=True, timeout=300, check=False)
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout.strip().splitlines()[-1]) == ["museum/archive-style", commit.oid, ""]
