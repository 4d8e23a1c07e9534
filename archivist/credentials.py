"""Content Credentials: a signed C2PA manifest in every result, and reading one back in plain words.

Signing and reading go through c2pa-python (the Content Authenticity Initiative's bindings to
c2pa-rs). The manifest of a result (built by `provenance.encode_image`) holds:

- a `c2pa.actions.v2` assertion: `c2pa.opened` on the original, then `c2pa.filtered` (style
  transfer) with the IPTC digital source type `trainedAlgorithmicMedia`, this library as the
  software agent, and the styles as its ingredients;
- the original as the parent ingredient, its SHA-256 in the ingredient's metadata; credentials
  the original carried itself are kept in the manifest store;
- each style image, or the preset, as a component ingredient (a preset is a style code inside
  the model, so it has no file: its title, artist and source are named);
- `org.archive-style-gan.provenance`: the whole provenance record (model repo, revision and
  weights SHA-256, style, strength, settings, seed, ...);
- thumbnails of the result and of each ingredient file (made by c2pa-rs).

The signing identity is an institution's certificate chain and key from the environment
(`CONTENT_CREDENTIALS_CERTS`, `CONTENT_CREDENTIALS_KEY`, optional `CONTENT_CREDENTIALS_TSA_URL`),
or else a self-issued one made on first use and kept in a folder (the archive's `credentials/`):
an EC P-256 CA, used once to issue the signing certificate and then thrown away, and the signing
key, readable by its owner only. Nobody outside trusts that CA, so verifiers call such a result
"valid, signing certificate untrusted": it shows the file is unchanged since it was signed, not who
signed it. An identity is checked in full (parsed, key matches certificate, in date, and a trial
signature c2pa accepts) when it is loaded, so a bad one stops the program at start-up.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stylegan import __version__
from stylegan.files import write_file

if TYPE_CHECKING:
    from stylegan.presets import Preset

ENV_CERTS = "CONTENT_CREDENTIALS_CERTS"  # PEM chain, signing certificate first: a file path or the PEM text
ENV_KEY = "CONTENT_CREDENTIALS_KEY"  # PEM private key of that certificate: a file path or the PEM text
ENV_TSA_URL = "CONTENT_CREDENTIALS_TSA_URL"  # optional RFC 3161 time-stamping authority
ENV_TRUST_ANCHORS = "CONTENT_CREDENTIALS_TRUST_ANCHORS"  # optional PEM roots that verification trusts

SOFTWARE_AGENT = "archive-style-gan"
PROVENANCE_ASSERTION = "org.archive-style-gan.provenance"
SHA256_METADATA = "org.archive-style-gan.sha256"  # in an ingredient's metadata: the SHA-256 of its file
WEIGHT_METADATA = "org.archive-style-gan.weight"  # in a style ingredient's metadata: its blend weight
SELF_ISSUED_ORGANIZATION = "archive-style GAN (self-issued)"
SELF_ISSUED_YEARS = 10
THUMBNAIL_SIDE = 512  # long side of the thumbnails c2pa-rs puts in the manifest
KEY_FILE, CHAIN_FILE, CA_FILE, LOCK_FILE = "signing-key.pem", "certificate-chain.pem", "ca-certificate.pem", ".lock"
UNTRUSTED = "signingCredential.untrusted"
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"II*\x00", "image/tiff"),
          (b"MM\x00*", "image/tiff"), (b"GIF8", "image/gif"), (b"BM", "image/bmp"))
_ALGORITHMS = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}


class CredentialsError(ValueError):
    """A signing identity that cannot be used, or credentials that cannot be made, with the reason."""


def _certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise CredentialsError(f"{what} is not a PEM certificate chain ({error})") from None
    return certificates


def _name(name: x509.Name) -> str:
    parts = [attribute.value for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME)
             for attribute in name.get_attributes_for_oid(oid)]
    return ", ".join(str(part) for part in parts) or name.rfc4514_string()


@dataclass(frozen=True)
class SigningIdentity:
    """A certificate chain and its key, checked in full on construction (see the module docstring)."""
    certificate_chain: bytes  # PEM: the signing certificate first, then its issuers
    private_key: bytes  # PEM; stored as unencrypted PKCS#8, the form c2pa reads
    self_issued: bool
    origin: str  # where it came from, for messages: a folder or the environment variables
    tsa_url: str | None = None
    algorithm: str = field(init=False)  # c2pa's name: es256, es384, es512, ps256 or ed25519
    subject: str = field(init=False)  # "common name, organisation" of the signing certificate
    issuer: str = field(init=False)

    def __post_init__(self) -> None:
        certificates = _certificates(self.certificate_chain, f"the certificate chain from {self.origin}")
        if not certificates:
            raise CredentialsError(f"the certificate chain from {self.origin} holds no certificate")
        try:
            key = serialization.load_pem_private_key(self.private_key, password=None)
        except TypeError:
            raise CredentialsError(f"the private key from {self.origin} is encrypted; give it unencrypted and "
                                   "protect the file (mode 0600) or the secret instead") from None
        except ValueError as error:
            raise CredentialsError(f"the private key from {self.origin} cannot be read ({error})") from None
        signing = certificates[0]
        raw = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if key.public_key().public_bytes(*raw) != signing.public_key().public_bytes(*raw):
            raise CredentialsError(f"the private key from {self.origin} does not belong to the first certificate "
                                   f"of the chain ({_name(signing.subject)}); the signing certificate comes first")
        now = datetime.now(UTC)
        if not signing.not_valid_before_utc <= now <= signing.not_valid_after_utc:
            raise CredentialsError(f"the signing certificate from {self.origin} is valid from "
                                   f"{signing.not_valid_before_utc:%Y-%m-%d} to "
                                   f"{signing.not_valid_after_utc:%Y-%m-%d}, not now")
        object.__setattr__(self, "algorithm", _algorithm(key, self.origin))
        object.__setattr__(self, "private_key", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        object.__setattr__(self, "subject", _name(signing.subject))
        object.__setattr__(self, "issuer", _name(signing.issuer))
        _trial_signature(self)

    def describe(self) -> str:
        if self.self_issued:
            return f"a self-issued identity, untrusted to outside verifiers ({self.subject})"
        return f"{self.subject}, certified by {self.issuer}"

    def signer(self) -> c2pa.Signer:
        info = c2pa.C2paSignerInfo(self.algorithm.encode(), self.certificate_chain, self.private_key,
                                   self.tsa_url.encode() if self.tsa_url else None)
        return c2pa.Signer.from_info(info)


def _algorithm(key: object, origin: str) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _ALGORITHMS:
        return _ALGORITHMS[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"  # C2PA allows RSA only with PSS padding
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise CredentialsError(f"the private key from {origin} is a {type(key).__name__}; C2PA signs with EC "
                           "P-256/P-384/P-521, RSA (PSS) or Ed25519 keys")


def _trial_signature(identity: SigningIdentity) -> None:
    """Sign a tiny image: c2pa checks the certificate profile (key usage, extended key usage, not
    self-signed, ...) only when it signs, and that should fail here rather than mid-request."""
    png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00:~\x9bU"
           b"\x00\x00\x00\nIDATx\x9cc`\x00\x00\x00\x02\x00\x01H\xaf\xa4q\x00\x00\x00\x00IEND\xaeB`\x82")
    definition = {"claim_generator_info": [{"name": SOFTWARE_AGENT, "version": __version__}],
                  "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                      {"action": "c2pa.created", "digitalSourceType":
                       "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}]}}]}
    try:
        with _context(thumbnails=False) as context, identity.signer() as signer, \
                c2pa.Builder(definition, context) as builder:
            builder.sign(signer, "image/png", io.BytesIO(png), io.BytesIO())
    except c2pa.C2paError as error:
        raise CredentialsError(f"c2pa refuses the signing identity from {identity.origin}: {error}") from None


def _pem_setting(name: str, value: str) -> bytes:
    """A PEM setting: the PEM text itself (a Space secret) or the path of a file holding it."""
    if "-----BEGIN" in value:
        return value.encode()
    try:
        return Path(value).expanduser().read_bytes()
    except OSError as error:
        raise CredentialsError(f"{name}: cannot read {value!r} ({error.strerror or error})") from None


def identity_from_environment(environ: Mapping[str, str]) -> SigningIdentity | None:
    """The institution's identity from `ENV_CERTS` and `ENV_KEY` (both or neither); None when unset."""
    certs, key = environ.get(ENV_CERTS, "").strip(), environ.get(ENV_KEY, "").strip()
    if not certs and not key:
        return None
    if not (certs and key):
        raise CredentialsError(f"{ENV_CERTS} and {ENV_KEY} go together: set both (the certificate chain and its "
                               "private key) or neither (a self-issued identity is used)")
    return SigningIdentity(_pem_setting(ENV_CERTS, certs), _pem_setting(ENV_KEY, key), self_issued=False,
                           origin=f"{ENV_CERTS}/{ENV_KEY}", tsa_url=environ.get(ENV_TSA_URL, "").strip() or None)


def checked_trust_anchors(pem: bytes, origin: str) -> bytes:
    """`pem`, once it is known to hold root certificates for verification to trust."""
    if not _certificates(pem, f"the trust anchors from {origin}"):
        raise CredentialsError(f"the trust anchors from {origin} hold no certificate")
    return pem


def trust_anchors_from_environment(environ: Mapping[str, str]) -> bytes | None:
    """PEM root certificates verification should trust (`ENV_TRUST_ANCHORS`); None when unset."""
    value = environ.get(ENV_TRUST_ANCHORS, "").strip()
    return checked_trust_anchors(_pem_setting(ENV_TRUST_ANCHORS, value), ENV_TRUST_ANCHORS) if value else None


def local_identity(directory: str | os.PathLike) -> SigningIdentity:
    """The self-issued identity kept in `directory`, made there on first use (under a lock, so
    processes starting together make one)."""
    directory = Path(directory)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (directory / CHAIN_FILE).exists():  # written last: without it, nothing was ever signed
                _write_self_issued(directory)
            chain, key = (directory / CHAIN_FILE).read_bytes(), (directory / KEY_FILE).read_bytes()
    except OSError as error:
        raise CredentialsError(f"cannot make or read the self-issued identity in {directory}: {error}") from None
    return SigningIdentity(chain, key, self_issued=True, origin=str(directory))


def _write_self_issued(directory: Path) -> None:
    now = datetime.now(UTC)
    tag = secrets.token_hex(4)  # tells the identities of different archives apart

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} {tag}"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, SELF_ISSUED_ORGANIZATION)])

    def certificate(subject, issuer, public_key, issuer_key, *, ca: bool) -> x509.Certificate:
        usage = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        usage.update(key_cert_sign=ca, crl_sign=ca, digital_signature=not ca)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=365 * SELF_ISSUED_YEARS))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
                   .add_extension(x509.KeyUsage(**usage), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                  critical=False))
        if not ca:  # C2PA's certificate profile asks for one of a few purposes; e-mail protection is one
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]),
                                            critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, signing_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("archive-style GAN self-issued CA")
    ca_certificate = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    signing_certificate = certificate(name("archive-style GAN self-issued signer"), ca_name,
                                      signing_key.public_key(), ca_key, ca=False)
    pem = serialization.Encoding.PEM
    write_file(directory / KEY_FILE, signing_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()), mode=0o600)
    write_file(directory / CA_FILE, ca_certificate.public_bytes(pem), mode=0o644)
    write_file(directory / CHAIN_FILE, signing_certificate.public_bytes(pem) + ca_certificate.public_bytes(pem),
               mode=0o644)


def sniff_mime_type(data: bytes) -> str | None:
    """The MIME type of an image file from its first bytes (the formats this project reads)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((mime for magic, mime in _MAGIC if data.startswith(magic)), None)


@dataclass(frozen=True)
class Ingredient:
    """Something a result was made from, as its manifest names it."""
    title: str
    data: bytes | None = None  # the file; None when there is none (a preset is a style code in the model)
    description: str = ""
    weight: float | None = None  # a style's weight in a blend
    informational_uri: str = ""

    def definition(self, label: str, relationship: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if self.data is not None:
            metadata[SHA256_METADATA] = hashlib.sha256(self.data).hexdigest()
        if self.weight is not None:
            metadata[WEIGHT_METADATA] = self.weight
        definition = {"title": self.title, "relationship": relationship, "label": label}
        if self.description:
            definition["description"] = self.description
        if self.informational_uri:
            definition["informational_URI"] = self.informational_uri
        if metadata:
            definition["metadata"] = metadata
        return definition


def preset_ingredient(name: str, preset: Preset | None, weight: float | None = None) -> Ingredient:
    """A preset as a style ingredient. It is a style code inside the model, not a file, so it is
    named by the artwork it was computed from (when the model says which)."""
    if preset is None:
        return Ingredient(f"preset {name}", description="a style preset of the model", weight=weight)
    source = preset.source if preset.source.startswith(("https://", "http://")) else ""
    licence = f" ({preset.license})" if preset.license else ""
    return Ingredient(f"preset {name}: {preset.label}", weight=weight, informational_uri=source,
                      description=f"a style preset of the model: a style code computed from {preset.label}{licence}, "
                                  "which is not itself part of this file")


@dataclass(frozen=True)
class Signing:
    """Who signs a result, and what its manifest names besides the provenance record."""
    identity: SigningIdentity
    original: bytes  # the original file as received: the parent ingredient
    styles: tuple[Ingredient, ...] = ()  # the component ingredients


def _context(*, thumbnails: bool = True, trust_anchors: bytes | None = None) -> c2pa.Context:
    # Never fetch a remote manifest: a file uploaded to the app would otherwise make it request any URL.
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False},
                                "builder": {"thumbnail": {"enabled": thumbnails, "long_edge": THUMBNAIL_SIDE}}}
    if trust_anchors is not None:
        settings["trust"] = {"trust_anchors": trust_anchors.decode()}
    return c2pa.Context.from_dict(settings)


def sign(data: bytes, format: str, identity: SigningIdentity, *, title: str, description: str,
         digital_source_type: str, provenance: Mapping[str, Any], parent: Ingredient,
         components: Sequence[Ingredient]) -> bytes:
    """`data` (an encoded PNG, JPEG, WEBP or TIFF) with a signed manifest embedded: the original
    (`parent`) opened, then filtered into this result with `components` (the styles)."""
    try:
        mime_type = MIME_TYPES[format]
    except KeyError:
        raise CredentialsError(f"cannot sign {format!r}; use one of {', '.join(MIME_TYPES)}") from None
    labels = [f"style-{number}" for number in range(1, len(components) + 1)]
    filtered: dict[str, Any] = {"action": "c2pa.filtered", "digitalSourceType": digital_source_type,
                                "softwareAgent": {"name": SOFTWARE_AGENT, "version": __version__},
                                "description": description}
    if labels:
        filtered["parameters"] = {"ingredientIds": labels}
    definition = {
        "claim_generator_info": [{"name": SOFTWARE_AGENT, "version": __version__}],
        "title": title,
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": [
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["original"]}}, filtered]}},
            {"label": PROVENANCE_ASSERTION, "data": dict(provenance)},
        ],
        # Ingredients without a file are defined here; files are added below, so c2pa-rs reads them.
        "ingredients": [component.definition(label, "componentOf")
                        for label, component in zip(labels, components) if component.data is None],
    }
    try:
        with _context() as context, identity.signer() as signer, c2pa.Builder(definition, context) as builder:
            for label, ingredient, relationship in [("original", parent, "parentOf"),
                                                    *((label, component, "componentOf")
                                                      for label, component in zip(labels, components))]:
                if ingredient.data is not None:
                    builder.add_ingredient(ingredient.definition(label, relationship),
                                           sniff_mime_type(ingredient.data) or "application/octet-stream",
                                           io.BytesIO(ingredient.data))
            signed = io.BytesIO()
            builder.sign(signer, mime_type, io.BytesIO(data), signed)
    except c2pa.C2paError as error:
        raise CredentialsError(f"cannot sign the Content Credentials: {error}") from None
    return signed.getvalue()


@dataclass(frozen=True)
class CredentialsReport:
    """What a file's Content Credentials say, and whether they hold."""
    state: str  # "none", "unreadable", or c2pa's validation state: "Invalid", "Valid", "Trusted"
    summary: str  # the state in plain words
    details: tuple[str, ...] = ()  # one line each: signer, actions, ingredients, model
    problems: tuple[str, ...] = ()  # every failed check but an untrusted signer, as c2pa explains it
    manifest_store: dict = field(default_factory=dict)  # as c2pa reads it

    @property
    def valid(self) -> bool:
        """Unchanged since it was signed (whether or not the signer is trusted)."""
        return self.state in ("Valid", "Trusted")

    def text(self) -> str:
        return "\n".join([self.summary, *(f"  {line}" for line in self.details),
                          *(f"  problem: {problem}" for problem in self.problems)])

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "valid": self.valid, "summary": self.summary, "details": list(self.details),
                "problems": list(self.problems), "manifest_store": self.manifest_store}


def read_credentials(data: bytes, *, trust_anchors: bytes | None = None) -> CredentialsReport:
    """The Content Credentials of an image file, validated (trusted roots: `trust_anchors`, PEM;
    by default none, so every signer reads as untrusted and a valid file as "Valid")."""
    try:
        with _context(trust_anchors=trust_anchors) as context:
            mime_type = sniff_mime_type(data)
            stream = io.BytesIO(data)
            reader = (c2pa.Reader.try_create(mime_type, stream, None, context) if mime_type
                      else c2pa.Reader.try_create(stream, None, context))
            if reader is None:
                return CredentialsReport("none", "No Content Credentials: this file carries no C2PA manifest.")
            with reader:
                store = json.loads(reader.json())
                state = reader.get_validation_state() or "Invalid"
                results = reader.get_validation_results() or {}
    except c2pa.C2paError as error:
        return CredentialsReport("unreadable", f"Unreadable: the Content Credentials in this file cannot be read "
                                               f"({error}).")
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    failures = results.get("activeManifest", {}).get("failure", []) or store.get("validation_status", [])
    problems = tuple(dict.fromkeys(failure.get("explanation") or failure.get("code", "")
                                   for failure in failures if failure.get("code") != UNTRUSTED))
    untrusted = any(failure.get("code") == UNTRUSTED for failure in failures)
    return CredentialsReport(state, _summary(state, manifest, untrusted), _details(store, manifest), problems, store)


def _summary(state: str, manifest: Mapping[str, Any], untrusted: bool) -> str:
    signature = manifest.get("signature_info", {})
    signer = ", ".join(part for part in (signature.get("common_name"), signature.get("issuer")) if part) or "unknown"
    if state == "Invalid":
        return (f"Invalid: this file, or its credentials, changed after {signer} signed them, or the signature is "
                "broken. What the credentials say cannot be relied on.")
    if state == "Trusted":
        return (f"Valid and trusted: unchanged since it was signed by {signer}, whose certificate chains to a "
                "trusted root.")
    if signature.get("issuer") == SELF_ISSUED_ORGANIZATION:
        trust = ("The signer is a self-issued identity of an archive-style GAN installation, so outside verifiers "
                 "call it untrusted: it shows the file is unchanged, not who signed it.")
    elif untrusted:
        trust = "The signer's certificate is not on this verifier's trust list, so it reads as untrusted."
    else:
        trust = ""
    return f"Valid: unchanged since it was signed by {signer}. {trust}".strip()


def _details(store: Mapping[str, Any], manifest: Mapping[str, Any]) -> tuple[str, ...]:
    lines = []
    generator = ", ".join(f"{info.get('name', '')} {info.get('version', '')}".strip()
                          for info in manifest.get("claim_generator_info", []))
    if generator:
        lines.append(f"made with: {generator}")
    for assertion in manifest.get("assertions", []):
        if assertion.get("label", "").startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                line = f"action: {action.get('action', '?')}"
                if action.get("digitalSourceType"):
                    line += f", digital source type {action['digitalSourceType'].rsplit('/', 1)[-1]}"
                agent = action.get("softwareAgent")
                if isinstance(agent, Mapping):
                    line += f", by {agent.get('name', '')} {agent.get('version', '')}".rstrip()
                lines.append(line)
    ingredients = manifest.get("ingredients", [])
    for ingredient in sorted(ingredients, key=lambda ingredient: ingredient.get("relationship") != "parentOf"):
        role = {"parentOf": "original", "componentOf": "component"}.get(ingredient.get("relationship"), "ingredient")
        line = f"{role}: {ingredient.get('title', '(untitled)')}"
        metadata = ingredient.get("metadata", {})
        if SHA256_METADATA in metadata:
            line += f", SHA-256 {metadata[SHA256_METADATA]}"
        if WEIGHT_METADATA in metadata:
            line += f", weight {metadata[WEIGHT_METADATA]}"
        if ingredient.get("active_manifest"):
            line += ", with Content Credentials of its own (kept)"
        lines.append(line)
    record = next((assertion.get("data", {}) for assertion in manifest.get("assertions", [])
                   if assertion.get("label") == PROVENANCE_ASSERTION), None)
    if isinstance(record, Mapping):
        lines.append(f"model: {record.get('model_repo')} at {record.get('model_revision')}, weights SHA-256 "
                     f"{record.get('weights_sha256')}; style {record.get('style')} at strength "
                     f"{record.get('style_strength')}; settings {json.dumps(record.get('settings'), sort_keys=True)}")
    if len(store.get("manifests", {})) > 1:
        lines.append(f"manifest store: {len(store['manifests'])} manifests (this one and its ingredients')")
    return tuple(lines)
