"""An institution's certificate chain, made for the tests: a root, an intermediate, a signer.

Independent of the library's own self-issued identity, so a test of "the configured chain is
used" does not test the library's certificate code against itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MUSEUM = "Museum of Test Prints"


@dataclass(frozen=True)
class Chain:
    chain: Path  # signer, intermediate (PEM)
    key: Path  # the signer's key (PEM, SEC1 "EC PRIVATE KEY": a form the library must convert)
    root: Path  # the root certificate alone (PEM): what a verifier would trust
    signer_name: str


def _certificate(subject: str, issuer: x509.Certificate | None, key, issuer_key, *, ca: bool,
                 days: tuple[int, int] = (-1, 365)) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, MUSEUM)])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now + timedelta(days=days[0])).not_valid_after(now + timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                            crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(issuer_key, hashes.SHA384())


def museum_chain(folder: Path, *, signer_days: tuple[int, int] = (-1, 365), signer_key=None) -> Chain:
    """Files of a three-level P-384 chain under `folder` (the signer valid for `signer_days` from
    today, with `signer_key`, by default a P-384 key too)."""
    folder.mkdir(parents=True, exist_ok=True)
    root_key, intermediate_key = (ec.generate_private_key(ec.SECP384R1()) for _ in range(2))
    signer_key = signer_key or ec.generate_private_key(ec.SECP384R1())
    root = _certificate("Test Root CA", None, root_key, root_key, ca=True)
    intermediate = _certificate("Test Content Signing CA", root, intermediate_key, root_key, ca=True)
    signer_name = "Digitisation Department"
    signer = _certificate(signer_name, intermediate, signer_key, intermediate_key, ca=False, days=signer_days)
    pem = serialization.Encoding.PEM
    chain = Chain(folder / "chain.pem", folder / "key.pem", folder / "root.pem", signer_name)
    chain.chain.write_bytes(signer.public_bytes(pem) + intermediate.public_bytes(pem))
    traditional = not isinstance(signer_key, ed25519.Ed25519PrivateKey)  # Ed25519 keys come in PKCS#8 only
    key_format = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    chain.key.write_bytes(signer_key.private_bytes(pem, key_format, serialization.NoEncryption()))
    chain.root.write_bytes(root.public_bytes(pem))
    return chain


def self_signed_signer(folder: Path) -> Chain:
    """A root certificate used as the signer: well-formed, its key matches, but C2PA's certificate
    profile refuses a self-signed signer."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate("Self-made", None, key, key, ca=True)
    pem = serialization.Encoding.PEM
    chain = Chain(folder / "chain.pem", folder / "key.pem", folder / "chain.pem", "Self-made")
    chain.chain.write_bytes(certificate.public_bytes(pem))
    chain.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return chain
