"""What a study's stored scores depend on: its ``identity``, checked on every resume.

The study carries ``identity`` (dataset, split, backbone, weights digest, matching settings,
...) and ``environment`` (library versions and device, informational) as study user attrs.
Values go through :func:`plain` first, so that stored and new identities compare equal.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any

import optuna

from scotsearch._version import __version__
from scotsearch.errors import ConfigError


if TYPE_CHECKING:
    from scotsearch.data.pairs import Pair


def plain(value: Any) -> Any:
    """``value`` as JSON-safe plain Python types (numpy scalars, tuples, paths converted).

    Optuna's RDB and journal storages JSON-encode user attrs and reject numpy scalars
    (ecosystem.md §1.5); the round trip also makes stored and new values compare equal.

    Args:
        value: nested dicts, lists, tuples, sets, numbers, strings, paths, numpy values.

    Returns:
        The same structure made of dicts, lists, numbers and strings.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent (an arbitrary object).
    """

    def default(o: Any) -> Any:
        if hasattr(o, "tolist") and callable(o.tolist):
            return o.tolist()  # numpy scalars and arrays, torch tensors
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        if isinstance(o, os.PathLike):
            return os.fspath(o)
        raise TypeError(f"cannot store a {type(o).__name__} in a study attribute")

    return json.loads(json.dumps(value, default=default))


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_MISSING = object()


def _show(v: Any) -> str:
    if v is _MISSING:
        return "(none)"
    if isinstance(v, list):
        return ",".join(str(x) for x in v)
    return str(v)


def check_identity(study: optuna.Study, identity: Mapping[str, Any]) -> None:
    """Store the study's identity on first use; refuse to continue with other settings.

    Args:
        study: the study about to receive trials.
        identity: everything the stored scores depend on (dataset, split, backbone, weights
            digest, matching settings, ...), as plain values.

    Raises:
        ConfigError: the study was started with a different identity. Every differing key
            is named with both values.
    """
    new = plain(dict(identity))
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", new)
        return
    a, b = _flatten(stored), _flatten(new)
    diffs = [
        f"{k}: stored {_show(a.get(k, _MISSING))}, now {_show(b.get(k, _MISSING))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, _MISSING) != b.get(k, _MISSING)
    ]
    if diffs:
        raise ConfigError(
            f"study '{study.study_name}' was started with other settings: {'; '.join(diffs)}; "
            "use another --study name"
        )


def evaluator_identity(evaluator: Any) -> dict[str, Any]:
    """The fields every study's identity shares: what the evaluator's scores depend on.

    Dataset and split, backbone and the weights' digest, compat mode and image side, the
    precision of the similarity terms (reduced precision can reorder near-ties), the
    objective's alpha and threshold basis.

    Args:
        evaluator: a :class:`~scotsearch.evaluate.Evaluator` (typed loosely: only its
            dataset, source, profile, precision, alphas and thres are read).

    Returns:
        The shared identity fields as plain values.
    """
    desc = evaluator.source.describe()
    # A drawn subset of the split (--per-category) is part of the objective; the key is
    # absent for a whole split, so studies stored before it existed resume unchanged.
    subset = getattr(evaluator.dataset, "subset", "")
    extra = {"subset": subset} if subset else {}
    return {**extra,
        "dataset": evaluator.dataset.name,
        "split": evaluator.dataset.split,
        "backbone": evaluator.source.backbone,
        "weights": str(desc.get("weights", "")),
        "weights_digest": str(desc.get("weights_digest", "")),
        "compat": evaluator.profile.name,
        "image_side": int(evaluator.profile.image_side),
        "precision": evaluator.precision,
        "alpha": float(evaluator.alphas[0]),
        "thres": evaluator.thres,
    }


def pairs_digest(pairs: Iterable[Pair]) -> str:
    """Short hash of the scored pairs (ids and images): a changed split is a new objective.

    Args:
        pairs: the pairs a study scores, in their scoring order.

    Returns:
        16 hex digits of a sha256 over ``pair_id|src_path|trg_path`` lines.
    """
    h = hashlib.sha256()
    for p in pairs:
        # surrogateescape: a path that is not valid UTF-8 (bytes the OS handed over) hashes
        # as its own bytes; valid text hashes as before.
        h.update(f"{p.pair_id}|{p.src_path}|{p.trg_path}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:16]


def environment() -> dict[str, str]:
    """Versions of scotsearch, torch, torchvision and optuna, and the CUDA device (or cpu).

    Returns:
        Package name (and ``device``) -> version text (``not installed`` when missing).
    """
    env = {"scotsearch": __version__}
    for pkg in ("torch", "torchvision", "optuna"):
        try:
            env[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            env[pkg] = "not installed"
    try:
        import torch

        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001 - a broken CUDA setup must not stop the record
        env["device"] = "cpu"
    return env
