"""Publish an exported model folder to the Hugging Face Hub, optionally under a tag.

`huggingface_hub` reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, when it is first
imported: set them before this module is used (the tests point HF_ENDPOINT at a local stand-in).
"""
from __future__ import annotations

from pathlib import Path

REQUIRED_FILES = ("config.json", "model.safetensors", "README.md")


def push_to_hub(export_dir: Path, repo_id: str, *, tag: str | None = None, private: bool = False,
                token: str | None = None, commit_message: str | None = None) -> str:
    """Upload `export_dir` as one commit to the model repo `repo_id` and return the commit URL.

    The repo is created if needed (`private` only applies then; otherwise the namespace's
    default visibility holds). The commit mirrors the folder: files of earlier commits that the
    folder no longer has are deleted (`.gitattributes` is kept). `tag`, if given, names this
    commit; an existing tag of that name is an error, never moved.
    """
    from huggingface_hub import HfApi

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ValueError(f"{export_dir}: not a directory")
    missing = [name for name in REQUIRED_FILES if not (export_dir / name).is_file()]
    if missing:
        raise ValueError(f"{export_dir}: not an exported model, missing {missing}")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=True if private else None, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=export_dir,
                               commit_message=commit_message or f"Upload {export_dir.name} (archive-style-gan)",
                               delete_patterns="*")
    if tag is not None:
        api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="model", tag_message=commit_message)
    return commit.commit_url
