"""Security: weights only from safetensors, no unpickling anywhere, files served only from the
archive, uploads only from Gradio's upload folder, the upload size limit, and the optional login."""
from __future__ import annotations

import ast
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

import app
from archivist.archive import Archive, Catalogue
from archivist.pipeline import Job, StyleChoice, ToArchive, stylize
from stylegan.inference import DEFAULT_MODEL_DIR, Stylizer
from tests.helpers.appserver import PRESET, bundled_stylizer, one_torch_thread, raw_call, serve, stylize_inputs
from tests.helpers.imagegen import encode, gradient, noise
from tests.helpers.required import required_import

gradio_client = required_import("gradio_client")
pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)
ROOT = Path(__file__).resolve().parents[2]
TITLE = "Minutes of the secret committee"
LOGIN = ("archivist", "correct horse battery staple")


# -- weights --------------------------------------------------------------------------------------
class Planted:
    """A pickle that, when loaded, creates a file: what a malicious `pytorch_model.bin` does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def model_folder(folder: Path, pickle_name: str, *, with_safetensors: bool) -> Path:
    folder.mkdir()
    for path in DEFAULT_MODEL_DIR.iterdir():
        if path.is_dir():  # preset_grams/
            shutil.copytree(path, folder / path.name)
        elif with_safetensors or path.suffix != ".safetensors":
            shutil.copy(path, folder / path.name)
    (folder / pickle_name).write_bytes(pickle.dumps(Planted(folder.parent / "pwned")))
    return folder


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "generator.ckpt"])
def test_a_model_with_only_pickled_weights_is_refused(tmp_path, pickle_name):
    folder = model_folder(tmp_path / "model", pickle_name, with_safetensors=False)
    with pytest.raises(ValueError, match=rf"no model\.safetensors \(found \['{pickle_name}'\]: pickle-based "
                                         r"weights are refused, convert them to safetensors\)"):
        Stylizer.from_pretrained(folder, device="cpu")
    assert not (tmp_path / "pwned").exists()


def test_the_cli_refuses_pickled_weights_with_a_clear_message(tmp_path):
    folder = model_folder(tmp_path / "model", "pytorch_model.bin", with_safetensors=False)
    image = tmp_path / "scan.png"
    image.write_bytes(encode(gradient(), "PNG"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    completed = subprocess.run([sys.executable, "-m", "archivist", "stylize", str(image), "--style", PRESET,
                                "--model", str(folder), "--out", str(tmp_path / "out")],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 2
    assert "pickle-based weights are refused" in completed.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "out").exists()


def test_safetensors_are_loaded_and_a_pickle_beside_them_is_never_opened(tmp_path):
    folder = model_folder(tmp_path / "model", "pytorch_model.bin", with_safetensors=True)
    stylizer = Stylizer.from_pretrained(folder, device="cpu")
    assert stylizer.model_info.weights_sha256 == bundled_stylizer().model_info.weights_sha256
    assert not (tmp_path / "pwned").exists()


def unsafe_calls(source: str, label: str) -> list[str]:
    """Calls that can unpickle: torch.load without weights_only=True everywhere; pickle, marshal,
    torch.hub and np.load(allow_pickle=True) outside the tests (which pickle their own objects)."""
    found = []
    in_tests = label.startswith("tests/")
    for node in ast.walk(ast.parse(source, label)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
        if (name.endswith("torch.load") and not safe) or (not in_tests and (
                name in ("pickle.load", "pickle.loads", "marshal.loads", "torch.hub.load", "dill.load")
                or (name.endswith("np.load") and "allow_pickle" in keywords))):
            found.append(f"{label}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_in_the_repository_unpickles_untrusted_data():
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    sources = {name: (ROOT / name).read_text() for name in listed if (ROOT / name).is_file()}
    assert len(sources) > 20 and "torch.load" in sources["stylegan/features.py"]
    assert [call for name, source in sources.items() for call in unsafe_calls(source, name)] == []
    # The scan can fail: it flags what it is meant to.
    probe = "import torch, pickle\ntorch.load('w.pt')\ntorch.load('w.pt', weights_only=True)\npickle.loads(b'')\n"
    assert unsafe_calls(probe, "stylegan/probe.py") == ["stylegan/probe.py:2: torch.load('w.pt')",
                                                        "stylegan/probe.py:4: pickle.loads(b'')"]
    assert unsafe_calls(probe, "tests/probe.py") == ["tests/probe.py:2: torch.load('w.pt')"]


# -- the served app -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
    archive = Archive(tmp_path_factory.mktemp("security") / "archive")
    stylize(bundled_stylizer(), encode(gradient(), "PNG"), "minutes.png", Job(StyleChoice.preset(PRESET)),
            ToArchive(archive, Catalogue(title=TITLE)))
    return archive


@pytest.fixture(scope="module")
def served(archive):
    """The app as `app.main` launches it, with the upload limit lowered to 64 kB to test it cheaply."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "MAX_UPLOAD_SIZE", "64kb")
        with serve(archive) as served:
            yield served


def test_files_outside_the_archive_are_never_served(served, archive, tmp_path):
    (entry,) = archive.search(text=TITLE)
    result = archive.path(entry.result_file)
    served_result = httpx.get(f"{served.url}gradio_api/file={result}")
    assert served_result.status_code == 200 and served_result.content == result.read_bytes()  # the route works
    planted = archive.root / "results" / "planted.png"
    planted.symlink_to("/etc/passwd")  # as if something had planted a link in a served folder
    staging = archive.root / "tmp" / "staging.tmp"
    staging.write_bytes(b"half-written")
    try:
        for path in ("/etc/passwd", "..%2f..%2f..%2f..%2fetc%2fpasswd", f"{archive.root}/results/../../../etc/passwd",
                     f"{archive.root}/results/%2e%2e/archive.sqlite3", str(archive.database), str(planted),
                     str(staging), str(Path(__file__))):
            for route in ("gradio_api/file=", "file=", "gradio_api/file/"):
                response = httpx.get(served.url + route + path)
                assert response.status_code in (403, 404), (route, path, response.status_code)
                assert b"root:" not in response.content and b"SQLite" not in response.content
    finally:
        planted.unlink()
        staging.unlink()


def test_a_client_cannot_name_a_file_on_the_server_as_its_upload(served, archive, tmp_path):
    """With preprocessing off, Gradio passes a file dict without `meta` through unchecked; the
    app accepts only files in Gradio's upload folder (this was an arbitrary file read)."""
    secret = tmp_path / "not-uploaded.png"
    secret.write_bytes(encode(gradient(30, 20), "PNG"))
    count = len(archive.search())
    attempts = [stylize_inputs({"path": "/etc/passwd"}),
                stylize_inputs({"path": str(secret), "orig_name": "innocent.png"}),
                stylize_inputs({"path": str(secret)}, style_source="images", style_image_1={"path": str(secret)}),
                stylize_inputs({"path": "/tmp/gradio/../../etc/passwd"})]
    for data in attempts:
        message = raw_call(served.url, "stylize", data)
        assert not message["success"]
        assert "not a file uploaded to this app" in message["output"]["error"]
    # The batch's file list is refused by Gradio itself (its data model demands `meta`, and then
    # checks the upload folder), or by the same check.
    batch = raw_call(served.url, "batch", [[{"path": str(secret)}], *stylize_inputs(None)[1:18], "", "", "", False, 640,
                                            "fast"])
    assert not batch["success"]
    assert len(archive.search()) == count


def test_uploads_over_the_limit_are_refused(served, tmp_path):
    limit = 64 * 1024
    for size, status in ((limit, 200), (limit + 1, 413), (5 * limit, 413)):
        response = httpx.post(f"{served.url}gradio_api/upload", files={"files": ("scan.png", bytes(size))})
        assert response.status_code == status
        if status == 413:
            assert f"maximum allowed size of {limit} bytes" in response.text
    large = tmp_path / "large.png"
    large.write_bytes(encode(Image.fromarray(noise(200, 200)), "PNG"))
    assert large.stat().st_size > limit
    client = gradio_client.Client(served.url, analytics_enabled=False, verbose=False,
                                  download_files=str(tmp_path / "downloads"))
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit} bytes"):
        client.predict(content=gradio_client.handle_file(str(large)), style_source="preset", preset=PRESET,
                       api_name="/stylize")
    small = tmp_path / "small.png"
    small.write_bytes(encode(gradient(), "PNG"))
    assert client.predict(content=gradio_client.handle_file(str(small)), style_source="preset", preset=PRESET,
                          api_name="/stylize")[2]["width"] == 24
    client.close()


def test_with_a_login_the_archive_is_hidden_until_logged_in(archive, monkeypatch, tmp_path):
    monkeypatch.setenv("ARCHIVE_AUTH", ":".join(LOGIN))
    (entry,) = archive.search(text=TITLE)
    with serve(archive) as locked:
        url = locked.url
        requests = [("GET", "config"), ("GET", "gradio_api/info"), ("GET", "gradio_api/openapi.json"),
                    ("POST", "gradio_api/queue/join"), ("POST", "gradio_api/upload"),
                    ("POST", "gradio_api/call/archive_search"), ("GET", "gradio_api/queue/data?session_hash=x"),
                    ("GET", f"gradio_api/file={archive.path(entry.result_file)}")]
        for method, path in requests:
            response = httpx.request(method, url + path, json={} if method == "POST" else None)
            assert response.status_code == 401, (method, path, response.status_code)
        page = httpx.get(url).text  # the login page: no catalogue data in it
        assert TITLE not in page and entry.id not in page
        with pytest.raises(gradio_client.exceptions.AuthenticationError):
            gradio_client.Client(url, analytics_enabled=False, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            gradio_client.Client(url, analytics_enabled=False, verbose=False, auth=(LOGIN[0], "wrong"))
        client = gradio_client.Client(url, analytics_enabled=False, verbose=False, auth=LOGIN,
                                      download_files=str(tmp_path / "downloads"))
        assert TITLE in [item["title"] for item in client.predict(api_name="/archive_search")]
        client.close()
