"""Where a suite's backbone is, and whether it is whole: the shipped demo backbone (checked
against its checksum), a local model folder, or a hub model in the local Hugging Face cache.
Nothing heavy loads here, so that `bench plan` and a run's first checks answer at once; the demo
backbone's pretraining is `bench.pretrain`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

from bench.errors import BenchError

DEMO_DIR = Path(__file__).resolve().parent.parent / "backbones" / "demo"
DEFAULT_STEPS = 1500

FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "build.json")


class BackboneError(BenchError):
    """A backbone folder that is missing, incomplete or altered (user error: rebuild it)."""


def rebuild_command(steps: int = DEFAULT_STEPS, seed: int = 0) -> str:
    return f"python -m bench backbone build demo --steps {steps} --seed {seed}"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Raise BackboneError unless `path` holds a whole backbone whose weights match build.json."""
    path = Path(path)
    command = rebuild_command()
    try:
        record = json.loads((path / "build.json").read_text())
        command = record.get("command", command)
    except (OSError, ValueError):
        record = None
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise BackboneError(f"backbone {path} lacks {', '.join(missing)}; rebuild it: {command}")
    if record is None or "sha256" not in record:
        raise BackboneError(f"backbone {path} has an unreadable build.json; rebuild it: {command}")
    if sha256(path / "model.safetensors") != record["sha256"]:
        raise BackboneError(
            f"backbone {path}: model.safetensors does not match the checksum in build.json; "
            f"rebuild it: {command}"
        )


def backbone_path(spec: str, download: bool = True) -> Path:
    """The folder of a suite's backbone: "demo" is the shipped one, checked against its checksum.
    A hub backbone is downloaded when it is not cached, unless `download` is off (`bench plan`
    looks in the cache alone: it never goes to the network)."""
    if spec == "demo":
        verify(DEMO_DIR)
        return DEMO_DIR
    path = Path(spec)
    if not path.exists() and HUB_ID.fullmatch(spec):
        return _hub_backbone(spec, download)
    if not (path / "config.json").exists():
        raise BenchError(
            f"backbone folder {path.absolute()} has no config.json (expected a saved model)"
        )
    return path


HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")  # org/name, or org/name@revision
# What a run reads of a hub backbone: its config, weights and tokenizer, not every format the
# repository ships (mBERT's also holds TensorFlow and Flax weights).
HUB_FILES = ["config.json", "*.safetensors", "tokenizer*", "vocab*", "special_tokens_map.json",
             "sentencepiece*", "*.model", "*.py"]  # fmt: skip


@functools.cache  # backbone_path runs several times a run: ask the hub once per process
def _hub_backbone(spec: str, download: bool) -> Path:
    """A hub backbone (`org/name@revision`) in the local Hugging Face cache, downloaded once.
    With HF_HUB_OFFLINE set the hub is not asked: the cache has it, or the run stops here."""
    from huggingface_hub import constants, snapshot_download

    repo, _, revision = spec.partition("@")
    try:
        found = snapshot_download(
            repo, revision=revision or None, allow_patterns=HUB_FILES,
            local_files_only=not download,
        )  # fmt: skip
        folder = Path(found)
    except (OSError, ValueError) as error:  # offline and not cached: LocalEntryNotFoundError
        why = (
            "HF_HUB_OFFLINE is set, so the hub is not asked"
            if constants.HF_HUB_OFFLINE
            else "`bench plan` does not download it (a run does)"
            if not download
            else f"the hub cannot be reached ({type(error).__name__})"
        )
        raise BenchError(
            f"backbone {spec} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and {why}; run once where the hub can be reached (HF_HUB_OFFLINE unset), or name "
            "a local model folder"
        ) from None
    if not (folder / "config.json").exists() or not any(folder.glob("*.safetensors")):
        raise BenchError(  # a cached snapshot without the files a run reads
            f"backbone {spec} in the local Hugging Face cache ({folder}) lacks config.json or "
            "safetensors weights, the files a run reads; fetch them where the hub can be "
            "reached, or name a local model folder"
        )
    return folder


def backbone_identity(spec: str) -> str:
    """Changes whenever the backbone's weights would: the demo's recorded checksum, or a local
    folder's config and the size and time of its weight files (hashing GBs on every run is slow)."""
    path = backbone_path(spec)
    if spec == "demo":
        return json.loads((path / "build.json").read_text())["sha256"]
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
        stat = weights.stat()
        digest.update(f"{weights.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]
