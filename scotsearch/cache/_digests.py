"""Identifying ``--weights`` without loading them, for the feature cache's key.

The cache key needs the digest of the weights (never a symbolic name), but a fully cached
search should not even build the CNN. The digest book (``<cache_dir>/features/weights.json``,
:func:`~scotsearch.cache._format.digests_path`) therefore records ``identity -> digest``,
where the identity of a checkpoint file (a ``--weights FILE`` or the torch-hub
``IMAGENET1K_V1`` checkpoint, the file the backbone loader would read) is its resolved path,
size and modification time, and the identity of random weights is the seed plus the torch
and torchvision versions (their initialisers). A recorded identity gives the digest at
once; anything else (no record, a touched file, no local ImageNet checkpoint) loads the
backbone, which computes the digest from the loaded state dict, and records it. When a
lazily loaded backbone disagrees with a recorded digest (a file rewritten with its old
size and time), the command stops rather than mixing entries of two networks.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scotsearch._io import atomic_write
from scotsearch.cache._format import canonical_json
from scotsearch.weights import describe_weights
from scotsearch.weights import imagenet_checkpoint
from scotsearch.weights import parse_weights
from scotsearch.weights import torchvision_version
from scotsearch.zoo import TIMM
from scotsearch.zoo import is_zoo
from scotsearch.zoonet import pretrained_source


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsRef:
    """What ``--weights`` names, known without loading it.

    Attributes:
        description: what ``Backbone.weights`` will say (``IMAGENET1K_V1``, ``file:<path>``,
            ``random:seed<N>``).
        identity: stat-level identity recorded in the digest book, or ``None`` when the
            weights must be loaded to be identified.
    """

    description: str
    identity: dict[str, Any] | None


def _file_identity(backbone: str, path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"kind": "file", "backbone": backbone, "path": str(path.resolve()),
            "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def weights_ref(backbone: str, weights: str | None, seed: int) -> WeightsRef:
    """Describe and identify ``--weights`` without reading any tensor.

    Args:
        backbone: the backbone name.
        weights: the ``--weights`` spelling (:func:`scotsearch.weights.parse_weights`).
        seed: ``--seed``, the seed of plain ``random``.
    """
    spec = parse_weights(weights, seed)
    if spec.kind == "imagenet" and is_zoo(backbone):
        # The pretrained file load_zoo would read (same lookup), if it is on this machine.
        description, zoo_path, _ = pretrained_source(backbone)
        return WeightsRef(description, None if zoo_path is None
                          else _file_identity(backbone, zoo_path))
    if spec.kind == "imagenet":
        # The file load_backbone would read (same lookup, same order).
        path = imagenet_checkpoint(backbone)
        identity = None if path is None else _file_identity(backbone, path)
        return WeightsRef(describe_weights(spec), identity)
    if spec.kind == "random":
        # A negative --seed has no identity (it is loaded every time): kept as it was.
        if spec.seed is None or spec.seed < 0:
            assert weights is not None
            return WeightsRef(weights, None)  # load_backbone reports the malformed seed
        return WeightsRef(describe_weights(spec), {
            "kind": "random", "backbone": backbone, "seed": spec.seed,
            "torch": torch.__version__, "torchvision": torchvision_version(),
            # timm's initialisers make the random weights of timm: backbones
            **({"timm": _timm_version()} if backbone.startswith(TIMM) else {}),
        })
    assert spec.path is not None
    # A missing file has no identity, so it is loaded, and load_backbone reports it.
    identity = _file_identity(backbone, spec.path) if spec.path.is_file() else None
    return WeightsRef(describe_weights(spec), identity)


def _timm_version() -> str:
    import timm

    return str(timm.__version__)


class DigestBook:
    """``weights.json``: weights identity -> state-dict digest, shared by processes.

    Updates are read-modify-write with an atomic replace; two processes racing may drop
    one record, which only costs a later re-computation.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, identity: dict[str, Any] | None) -> str | None:
        """The recorded digest of ``identity`` (``None``: no record, or no identity)."""
        if identity is None:
            return None
        rec = self._load().get(canonical_json(identity))
        return rec.get("digest") if isinstance(rec, dict) else None

    def put(self, identity: dict[str, Any] | None, digest: str, description: str) -> None:
        """Record ``identity -> digest`` (best effort: a read-only cache only logs)."""
        if identity is None:
            return
        data = self._load()
        data[canonical_json(identity)] = {"digest": digest, "weights": description}
        try:
            atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True), fsync=False)
        except OSError as exc:
            logger.debug("cannot record weights digest in %s: %s", self.path, exc)

    def records(self) -> dict[str, dict[str, str]]:
        """Every record: canonical identity JSON -> ``{"digest", "weights"}``."""
        return self._load()

    def replace(self, data: dict[str, dict[str, str]]) -> None:
        """Replace the whole book with ``data`` (atomically)."""
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True), fsync=False)
