"""What ``--weights`` names: its spellings, the description of loaded weights, the hub file.

``--weights`` is read in two places: the backbone loader loads what it names, and the
feature cache identifies it without loading anything (to skip building the CNN when every
entry is cached). Both parse it with :func:`parse_weights`, describe it with
:func:`describe_weights` and find the ImageNet checkpoint with :func:`imagenet_checkpoint`,
so they cannot disagree about which file or seed a spelling means.

Spellings: ``None`` or ``IMAGENET1K_V1`` (torchvision's V1 ImageNet weights, what the
references used), ``random`` (seeded by ``--seed``) or ``random:seed<N>`` / ``random:<N>``,
anything else a checkpoint file.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch


#: Name of the ImageNet weights the references used (torchvision's ``DEFAULT`` is V2: wrong).
IMAGENET_WEIGHTS = "IMAGENET1K_V1"

#: Where torchvision's ``ResNet50_Weights.IMAGENET1K_V1`` / ``ResNet101_Weights.IMAGENET1K_V1``
#: download from. Written out rather than read from torchvision's enums because importing
#: torchvision costs about 2 s (it imports ``torch._dynamo``), and every command that finds
#: the weights' digest on record would pay that for two strings; ``tests/test_weights.py``
#: checks them against the enums.
_IMAGENET_URLS = {
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}
#: File names of the same V1 weights as the references' torchvision (pre-0.13) fetched them;
#: accepted in the hub cache too so an old cache is reused.
_LEGACY_FILES = {"resnet50": "resnet50-19c8e357.pth", "resnet101": "resnet101-5d3b4d8f.pth"}

_RANDOM = "random"
_RANDOM_PREFIX = "random:"
_FILE_PREFIX = "file:"


@dataclass(frozen=True)
class WeightsSpec:
    """What a ``--weights`` spelling asks for; nothing is read to know it.

    Attributes:
        kind: ``imagenet``, ``random`` or ``file``.
        seed: the seed of random weights; ``None`` when the spelling has no readable seed
            (``random:abc``), and for the other kinds.
        path: the checkpoint file (``~`` expanded, not resolved); ``None`` unless ``file``.
    """

    kind: Literal["imagenet", "random", "file"]
    seed: int | None = None
    path: Path | None = None


def parse_weights(weights: str | None, seed: int = 0) -> WeightsSpec:
    """Read a ``--weights`` spelling.

    Args:
        weights: the spelling (see the module docstring).
        seed: the seed plain ``random`` means (``--seed``).

    Returns:
        The parsed spelling; a malformed seed gives ``seed=None`` for the caller to report.
    """
    if weights is None or weights == IMAGENET_WEIGHTS:
        return WeightsSpec("imagenet")
    if weights == _RANDOM:
        return WeightsSpec("random", seed=seed)
    if weights.startswith(_RANDOM_PREFIX):
        tail = weights[len(_RANDOM_PREFIX) :].removeprefix("seed")
        return WeightsSpec("random", seed=int(tail) if tail.isdigit() else None)
    return WeightsSpec("file", path=Path(weights).expanduser())


def describe_weights(spec: WeightsSpec) -> str:
    """What ``Backbone.weights`` says for loaded weights: the name caches and exports record.

    Args:
        spec: a parsed spelling with a seed (``random``) or an existing file (``file``).

    Returns:
        ``IMAGENET1K_V1``, ``random:seed<N>`` or ``file:<resolved path>``.
    """
    if spec.kind == "imagenet":
        return IMAGENET_WEIGHTS
    if spec.kind == "random":
        return f"{_RANDOM_PREFIX}seed{spec.seed}"
    assert spec.path is not None
    return f"{_FILE_PREFIX}{spec.path.resolve()}"


def description_file(description: str) -> Path | None:
    """The checkpoint file a ``file:<path>`` description names (``None`` for other kinds)."""
    return Path(description[len(_FILE_PREFIX) :]) if description.startswith(_FILE_PREFIX) else None


def spelling_of(description: str) -> str | None:
    """A ``--weights`` spelling that loads the weights ``description`` names.

    The inverse of :func:`describe_weights`: ``IMAGENET1K_V1`` gives ``None`` (the default),
    ``file:<path>`` the path, ``random:seed<N>`` itself.
    """
    path = description_file(description)
    if path is not None:
        return str(path)
    if description == IMAGENET_WEIGHTS or description.startswith("pretrained"):
        return None  # the default spelling loads the pretrained weights
    return description


def imagenet_url(backbone: str) -> str:
    """Download address of the ``IMAGENET1K_V1`` checkpoint of ``backbone``."""
    return _IMAGENET_URLS[backbone]


def imagenet_file_name(backbone: str) -> str:
    """File name of the ``IMAGENET1K_V1`` checkpoint in the torch-hub cache."""
    return os.path.basename(urlparse(imagenet_url(backbone)).path)


def hub_checkpoints() -> Path:
    """The torch-hub folder checkpoints are downloaded to (read at call time: tests move it)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_checkpoint(backbone: str) -> Path | None:
    """The hub-cache file holding ``IMAGENET1K_V1`` for ``backbone``, if present.

    Args:
        backbone: a backbone name (unknown names have no checkpoint).

    Returns:
        The current torchvision file name if present, else the pre-0.13 one, else ``None``.
    """
    if backbone not in _IMAGENET_URLS:
        return None
    folder = hub_checkpoints()
    for name in (imagenet_file_name(backbone), _LEGACY_FILES[backbone]):
        if (folder / name).is_file():
            return folder / name
    return None


@functools.cache
def torchvision_version() -> str:
    """``torchvision.__version__`` (local build tag included, e.g. ``0.29.1+cu130``), without
    importing torchvision where it is not loaded yet; read once per process.

    The version is recorded with random weights' identity and in cache manifests; importing
    the package for it costs about 2 s. Its ``version.py`` holds the same string (the package
    metadata's version lacks the build tag, so it is not used).
    """
    if "torchvision" in sys.modules:
        return str(sys.modules["torchvision"].__version__)
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            text = (Path(folder) / "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        if found:
            return found.group(1)
    import torchvision  # an unusual layout: ask the package itself

    return str(torchvision.__version__)
