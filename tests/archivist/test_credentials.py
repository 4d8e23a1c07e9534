"""Content Credentials: results are signed in every format and read back valid by c2pa itself, a
changed pixel is caught, the original ingredient is the archived original, a configured chain is
used, and a broken identity is refused with a message that names the problem."""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import zlib

import c2pa
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from PIL import Image

import stylegan
from archivist.archive import Archive
from archivist.credentials import (
    CA_FILE,
    CHAIN_FILE,
    ENV_CERTS,
    ENV_KEY,
    ENV_TRUST_ANCHORS,
    KEY_FILE,
    PROVENANCE_ASSERTION,
    SHA256_METADATA,
    WEIGHT_METADATA,
    CredentialsError,
    Ingredient,
    Signing,
    SigningIdentity,
    identity_from_environment,
    local_identity,
    preset_ingredient,
    read_credentials,
    trust_anchors_from_environment,
)
from archivist.provenance import encode_image, read_provenance, sha256_bytes
from stylegan.presets import Preset
from tests.helpers.certificates import MUSEUM, museum_chain, self_signed_signer
from tests.helpers.imagegen import encode, gradient
from tests.helpers.records import SOURCE, make_record

MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff"}
STYLE = encode(gradient(24, 24).transpose(Image.Transpose.ROTATE_90), "JPEG")
PRESET = Preset("wave", "The Great Wave", "Hokusai", "c. 1831", "https://example.org/wave.jpg", "Public domain")


@pytest.fixture(scope="module")
def identity(tmp_path_factory) -> SigningIdentity:
    return local_identity(tmp_path_factory.mktemp("credentials"))


def signed(identity: SigningIdentity, format: str, image: Image.Image | None = None) -> bytes:
    styles = (Ingredient("style.jpg", STYLE, weight=2.0), preset_ingredient("wave", PRESET, 1.0))
    return encode_image(image or gradient(), make_record(), format, signing=Signing(identity, SOURCE, styles))


def c2pa_read(data: bytes, format: str) -> tuple[str, list[str], dict]:
    """(validation state, codes of the failed checks, active manifest) as c2pa itself reads `data`."""
    with c2pa.Reader(MIME_TYPES[format], io.BytesIO(data)) as reader:
        failures = reader.get_validation_results()["activeManifest"]["failure"]
        return reader.get_validation_state(), [failure["code"] for failure in failures], reader.get_active_manifest()


@pytest.mark.parametrize("format", MIME_TYPES)
def test_sign_and_read_back_valid_in_every_format(identity, format):
    data = signed(identity, format)
    state, failures, manifest = c2pa_read(data, format)
    assert state == "Valid" and failures == ["signingCredential.untrusted"]  # self-issued: nothing else fails
    assertions = {assertion["label"]: assertion["data"] for assertion in manifest["assertions"]}
    opened, filtered = assertions["c2pa.actions.v2"]["actions"]
    assert opened["action"] == "c2pa.opened" and filtered["action"] == "c2pa.filtered"
    assert filtered["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert filtered["softwareAgent"] == {"name": "archive-style-gan", "version": stylegan.__version__}
    assert assertions[PROVENANCE_ASSERTION] == make_record().to_dict()
    ingredients = {ingredient["title"]: ingredient for ingredient in manifest["ingredients"]}
    parent = ingredients["letter_1887.tif"]
    assert parent["relationship"] == "parentOf" and parent["metadata"][SHA256_METADATA] == sha256_bytes(SOURCE)
    style = ingredients["style.jpg"]
    assert style["relationship"] == "componentOf" and style["metadata"] == {SHA256_METADATA: sha256_bytes(STYLE),
                                                                            WEIGHT_METADATA: 2.0}
    preset = ingredients["preset wave: The Great Wave, Hokusai, c. 1831"]
    assert preset["relationship"] == "componentOf" and preset["informational_URI"] == PRESET.source
    assert "thumbnail" in manifest and "thumbnail" in parent and "thumbnail" in style  # made by c2pa-rs
    assert manifest["signature_info"]["issuer"] == "archive-style GAN (self-issued)"
    assert read_provenance(data) == make_record()  # the XMP is still there, under the signature
    report = read_credentials(data)
    assert report.state == "Valid" and report.valid and report.problems == ()
    assert "self-issued" in report.summary and "untrusted" in report.summary


def change_one_pixel(data: bytes, format: str, image: Image.Image) -> bytes:
    """`data` with one pixel's value changed in place (PNG, TIFF) or one byte of the compressed
    pixel data flipped (JPEG, WebP); everything else, the manifest included, left as it was."""
    if format == "PNG":  # the pixels again, unfiltered (so that one changed byte is one changed value)
        pixels = np.asarray(Image.open(io.BytesIO(data))).copy()
        pixels[0, 0, 0] ^= 0x01
        rows = b"".join(b"\x00" + row.tobytes() for row in pixels)
        out, position, placed = [data[:8]], 8, False
        while position < len(data):
            (length,) = struct.unpack_from(">I", data, position)
            chunk = data[position:position + 12 + length]
            position += 12 + length
            if chunk[4:8] == b"IDAT":
                if placed:
                    continue
                body, placed = zlib.compress(rows), True
                chunk = struct.pack(">I", len(body)) + b"IDAT" + body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
            out.append(chunk)
        return b"".join(out)
    changed = bytearray(data)
    if format == "TIFF":  # stored uncompressed: the first pixel's bytes are there as they are
        index = data.index(image.tobytes()[:32])
    elif format == "JPEG":  # the last scan: the thumbnails in the manifest are JPEGs too, and come first
        start = data.rindex(b"\xff\xda")
        index = start + (data.rindex(b"\xff\xd9") - start) // 2
        while 0xFF in (changed[index - 1], changed[index], changed[index] ^ 0x01):
            index += 1  # never make or break a marker
    else:
        start = data.index(b"VP8")
        index = start + 8 + struct.unpack_from("<I", data, start + 4)[0] // 2
    changed[index] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("format", MIME_TYPES)
def test_a_changed_pixel_fails_validation(identity, format):
    image = gradient()
    data = signed(identity, format, image)
    tampered = change_one_pixel(data, format, image)
    if format in ("PNG", "TIFF"):  # exactly one value of one pixel differs
        difference = np.asarray(Image.open(io.BytesIO(tampered)), np.int16) - np.asarray(image, np.int16)
        assert np.count_nonzero(difference) == 1
    state, failures, _ = c2pa_read(tampered, format)
    assert state == "Invalid" and "assertion.dataHash.mismatch" in failures
    report = read_credentials(tampered)
    assert report.state == "Invalid" and not report.valid and report.summary.startswith("Invalid: ")
    assert any("hash" in problem for problem in report.problems)


def test_the_original_ingredient_is_the_archived_original_and_keeps_its_own_credentials(tmp_path):
    archive = Archive(tmp_path / "archive")
    first = archive.add(SOURCE, gradient(), make_record())
    archived = archive.path(first.original_file).read_bytes()
    state, _, manifest = c2pa_read(archive.path(first.result_file).read_bytes(), "PNG")
    (parent,) = [item for item in manifest["ingredients"] if item["relationship"] == "parentOf"]
    assert state == "Valid"
    assert parent["metadata"][SHA256_METADATA] == sha256_bytes(archived) == first.record.source_sha256
    assert "active_manifest" not in parent  # the scan had no credentials of its own

    # A signed result, stylised again: its own manifest comes along, validated, as the parent's.
    result = archive.path(first.result_file).read_bytes()
    record = make_record(source_sha256=sha256_bytes(result), source_name="first-result.png")
    second = archive.add(result, gradient(), record)
    report = read_credentials(archive.path(second.result_file).read_bytes())
    (parent,) = [item for item in report.manifest_store["manifests"][report.manifest_store["active_manifest"]]
                 ["ingredients"] if item["relationship"] == "parentOf"]
    assert report.state == "Valid" and len(report.manifest_store["manifests"]) == 2
    assert parent["active_manifest"] in report.manifest_store["manifests"]
    assert any("with Content Credentials of its own" in line for line in report.details)


def test_the_self_issued_identity_is_made_once_with_a_private_key(tmp_path):
    folder = tmp_path / "credentials"
    first = local_identity(folder)
    again = local_identity(folder)
    assert first.certificate_chain == again.certificate_chain and first.private_key == again.private_key
    assert first.self_issued and first.algorithm == "es256" and "untrusted" in first.describe()
    assert stat.S_IMODE(os.stat(folder / KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    key = serialization.load_pem_private_key((folder / KEY_FILE).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert (folder / CHAIN_FILE).read_bytes().endswith((folder / CA_FILE).read_bytes())
    # Only the signing key is kept: the CA's key was used once and thrown away.
    assert [path.name for path in folder.iterdir() if b"PRIVATE KEY" in path.read_bytes()] == [KEY_FILE]
    assert local_identity(tmp_path / "other").subject != first.subject  # one identity per archive


def test_a_configured_chain_is_used_when_given(tmp_path):
    chain = museum_chain(tmp_path / "museum")
    identity = identity_from_environment({ENV_CERTS: str(chain.chain), ENV_KEY: str(chain.key)})
    assert not identity.self_issued and identity.algorithm == "es384"
    assert identity.describe() == f"{chain.signer_name}, {MUSEUM}, certified by Test Content Signing CA, {MUSEUM}"
    archive = Archive(tmp_path / "archive", identity=identity)
    entry = archive.add(SOURCE, gradient(), make_record())
    data = archive.path(entry.result_file).read_bytes()
    state, failures, manifest = c2pa_read(data, "PNG")
    assert state == "Valid" and failures == ["signingCredential.untrusted"]  # not on c2pa's default trust list
    assert manifest["signature_info"]["common_name"] == chain.signer_name
    assert manifest["signature_info"]["issuer"] == MUSEUM
    assert not (tmp_path / "archive" / "credentials").exists()  # no self-issued identity was made
    # A verifier that trusts the museum's root calls it trusted; so does one given the root by setting.
    anchors = trust_anchors_from_environment({ENV_TRUST_ANCHORS: str(chain.root)})
    report = read_credentials(data, trust_anchors=anchors)
    assert report.state == "Trusted" and report.problems == () and report.summary.startswith("Valid and trusted")
    # The PEM text itself works as well as a path (a Space secret holds the text).
    from_text = identity_from_environment({ENV_CERTS: chain.chain.read_text(), ENV_KEY: chain.key.read_text()})
    assert (from_text.subject, from_text.private_key) == (identity.subject, identity.private_key)


@pytest.mark.parametrize(("make_key", "algorithm"), [
    (lambda: ec.generate_private_key(ec.SECP256R1()), "es256"),
    (lambda: ec.generate_private_key(ec.SECP521R1()), "es512"),
    (lambda: rsa.generate_private_key(65537, 2048), "ps256"),
    (ed25519.Ed25519PrivateKey.generate, "ed25519")])
def test_every_key_type_c2pa_allows_signs(tmp_path, make_key, algorithm):
    chain = museum_chain(tmp_path / "museum", signer_key=make_key())
    identity = identity_from_environment({ENV_CERTS: str(chain.chain), ENV_KEY: str(chain.key)})
    data = encode_image(gradient(), make_record(), "PNG", signing=Signing(identity, SOURCE))
    assert identity.algorithm == algorithm and read_credentials(data).state == "Valid"


def broken_settings(tmp_path) -> dict[str, tuple[dict[str, str], str]]:
    chain, other = museum_chain(tmp_path / "museum"), museum_chain(tmp_path / "other")
    expired = museum_chain(tmp_path / "expired", signer_days=(-30, -1))
    self_signed = self_signed_signer(tmp_path / "self-signed")
    encrypted = tmp_path / "encrypted.pem"
    key = serialization.load_pem_private_key(chain.key.read_bytes(), None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return {
        "only the chain": ({ENV_CERTS: str(chain.chain)}, f"{ENV_CERTS} and {ENV_KEY} go together"),
        "missing file": ({ENV_CERTS: str(tmp_path / "nope.pem"), ENV_KEY: str(chain.key)}, r"cannot read .*nope\.pem"),
        "garbage chain": ({ENV_CERTS: str(garbage), ENV_KEY: str(chain.key)}, "is not a PEM certificate chain"),
        "garbage key": ({ENV_CERTS: str(chain.chain), ENV_KEY: str(garbage)}, "private key .* cannot be read"),
        "another's key": ({ENV_CERTS: str(chain.chain), ENV_KEY: str(other.key)}, "does not belong to the first"),
        "expired": ({ENV_CERTS: str(expired.chain), ENV_KEY: str(expired.key)}, "is valid from .* not now"),
        "encrypted key": ({ENV_CERTS: str(chain.chain), ENV_KEY: str(encrypted)}, "is encrypted"),
        "root first": ({ENV_CERTS: str(chain.root), ENV_KEY: str(chain.key)}, "does not belong to the first"),
        # Well-formed, but C2PA's certificate profile refuses it: found by the trial signature at load.
        "self-signed": ({ENV_CERTS: str(self_signed.chain), ENV_KEY: str(self_signed.key)},
                        "c2pa refuses the signing identity .*self-signed"),
    }


def test_a_broken_identity_is_refused_with_the_reason(tmp_path):
    for label, (environ, message) in broken_settings(tmp_path).items():
        with pytest.raises(CredentialsError, match=message):
            identity_from_environment(environ)
            raise AssertionError(f"{label} was accepted")
    with pytest.raises(CredentialsError, match=f"{ENV_TRUST_ANCHORS} hold no certificate|not a PEM"):
        trust_anchors_from_environment({ENV_TRUST_ANCHORS: "-----BEGIN X-----"})


def test_files_without_or_with_unreadable_credentials_say_so(identity):
    assert read_credentials(SOURCE).state == "none"
    assert "No Content Credentials" in read_credentials(SOURCE).summary
    broken = bytearray(signed(identity, "JPEG"))
    broken[broken.index(b"c2pa.claim") + 40] ^= 0xFF  # inside the claim: the manifest store itself damaged
    report = read_credentials(bytes(broken))
    assert report.state == "unreadable" and not report.valid and report.summary.startswith("Unreadable: ")
    assert json.dumps(report.to_dict())  # JSON all the way down, for the app's API
