"""A provenance record and the original it names, for tests of provenance and Content Credentials."""
from __future__ import annotations

import stylegan
from archivist.provenance import ProvenanceRecord, sha256_bytes
from tests.helpers.imagegen import encode, gradient

SOURCE = encode(gradient(), "PNG")


def make_record(**changes) -> ProvenanceRecord:
    fields = {"source_sha256": sha256_bytes(SOURCE), "source_name": "letter_1887.tif",
              "model_repo": "org/archive-style", "model_revision": "0123456789abcdef0123456789abcdef01234567",
              "weights_sha256": sha256_bytes(b"weights"), "style": "preset:hokusai_great_wave_off_kanagawa",
              "style_strength": 0.8, "settings": {"preserve_color": True, "max_long_side": None, "mode": "feedforward",
                                                  "post_processing": {"contrast": 1.1}},
              "seed": 1234, "library_version": stylegan.__version__, "created": "2026-11-26T01:02:03Z"}
    return ProvenanceRecord(**(fields | changes))
