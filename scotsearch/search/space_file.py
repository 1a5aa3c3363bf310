"""The search space of ``scotsearch tune`` as a TOML file (``--space``).

Sections ``[stair]``, ``[eps]``, ``[n_iter]``, ``[exp2]``, ``[cam]`` and ``[layers]``; a section
in the file replaces the default's section as a whole, a missing one keeps the default's.
``studies/default_space.toml`` is the default written out with comments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import cast

import tomllib

from scotsearch.errors import ConfigError
from scotsearch.search.space import CAM_CHOICES
from scotsearch.search.space import Range
from scotsearch.search.space import TuneSpace


#: The default space. ``studies/default_space.toml`` is the same space written out, with
#: comments, as the starting point for a custom ``--space`` file (a test keeps both equal).
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "stair": {"heights": [0.0, 1.0], "first_height": 0.0, "widths": [0.0, 1.0], "decimals": 4},
    "eps": {"low": 0.005, "high": 0.5, "log": True},
    "n_iter": {"low": 1, "high": 100, "log": True},
    "exp2": {"low": 0.25, "high": 2.0, "log": False},
    "cam": {"choices": ["none", "raw", "stair"]},
    "layers": {"candidates": "all"},
}

#: Keys each section accepts (``fixed``/``value`` turn a searched setting into a fixed one).
_KEYS = {
    "stair": {"heights", "first_height", "widths", "decimals", "fixed"},
    "eps": {"low", "high", "log", "fixed", "value"},
    "n_iter": {"low", "high", "log", "fixed", "value"},
    "exp2": {"low", "high", "log", "fixed", "value"},
    "cam": {"choices", "fixed", "value"},
    "layers": {"candidates"},
}


def _range(section: str, spec: Mapping[str, Any], integer: bool) -> Range | float | int | None:
    if spec.get("fixed", False) is True:
        return None
    if "value" in spec:
        v = spec["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"[{section}] value must be a number, got {v!r}")
        return int(v) if integer else float(v)
    try:
        low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    except KeyError:
        raise ConfigError(
            f"[{section}] needs low and high (or value = ..., or fixed = true)"
        ) from None
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"[{section}] low/high must be numbers, got {v!r}")
        if integer and int(v) != v:
            raise ConfigError(f"[{section}] low/high must be integers, got {v!r}")
    if not low < high:
        raise ConfigError(f"[{section}] needs low < high, got {low} and {high}")
    if log and low <= 0:
        raise ConfigError(f"[{section}] a log scale needs low > 0, got {low}")
    if integer:
        return Range(int(low), int(high), log)
    return Range(float(low), float(high), log)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pair(section: str, key: str, v: Any) -> tuple[float, float]:
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    ):
        raise ConfigError(f"[{section}] {key} must be [low, high], got {v!r}")
    lo, hi = float(v[0]), float(v[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"[{section}] {key} must satisfy 0 <= low < high <= 1, got {v!r}")
    return lo, hi


def space_from_dict(spec: Mapping[str, Any], *, source: str = "default") -> TuneSpace:
    """Build a :class:`TuneSpace` from the TOML structure, sections merged over the default.

    A section present in ``spec`` replaces the default's section as a whole.

    Raises:
        ConfigError: unknown section or key, or an impossible range.
    """
    unknown = sorted(set(spec) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"search space {source}: unknown section(s) {unknown}; known: {sorted(_KEYS)}"
        )
    merged = {**DEFAULT_SPACE, **spec}
    for section, body in merged.items():
        if not isinstance(body, Mapping):
            raise ConfigError(f"search space {source}: [{section}] must be a table")
        bad = sorted(set(body) - _KEYS[section])
        if bad:
            raise ConfigError(f"search space {source}: [{section}] has unknown key(s) {bad}")
    try:
        stair = merged["stair"]
        first = float(stair.get("first_height", 0.0))
        decimals = int(stair.get("decimals", 4))
        if not 1 <= decimals <= 6:
            # Exported rows print the staircase with 6 significant digits; more decimals would
            # not survive the round trip.
            raise ConfigError(f"[stair] decimals must be in 1..6, got {decimals}")
        heights = widths = None
        if stair.get("fixed", False) is not True:
            heights = _pair("stair", "heights", stair.get("heights", [0.0, 1.0]))
            widths = _pair("stair", "widths", stair.get("widths", [0.0, 1.0]))
            if first > heights[0]:
                raise ConfigError(
                    f"[stair] first_height {first:g} must not exceed the lowest searched height "
                    f"{heights[0]:g}"
                )
        cam_spec = merged["cam"]
        cam: tuple[str, ...] | str | None
        if cam_spec.get("fixed", False) is True:
            cam = None
        elif "value" in cam_spec:
            cam = str(cam_spec["value"])
            if cam not in CAM_CHOICES:
                raise ConfigError(f"[cam] value must be none, raw or stair, got {cam!r}")
        else:
            choices = cam_spec.get("choices")
            if not isinstance(choices, list) or not choices or not set(choices) <= CAM_CHOICES:
                raise ConfigError(
                    f"[cam] choices must be a non-empty list of none/raw/stair, got {choices!r}"
                )
            cam = tuple(dict.fromkeys(str(c) for c in choices))
            if len(cam) == 1:
                cam = cam[0]
        cand = merged["layers"].get("candidates", "all")
        if cand == "all":
            layers = None
        elif isinstance(cand, list) and cand and all(_is_int(i) for i in cand):
            layers = tuple(sorted(set(cand)))
        else:
            raise ConfigError(
                f'[layers] candidates must be "all" or a list of layer ids, got {cand!r}'
            )
        return TuneSpace(
            heights=heights,
            first_height=first,
            widths=widths,
            decimals=decimals,
            eps=_range("eps", merged["eps"], integer=False),
            # integer=True gives a Range of ints, an int or None
            n_iter=cast("Range | int | None", _range("n_iter", merged["n_iter"], integer=True)),
            exp2=_range("exp2", merged["exp2"], integer=False),
            cam=cam,
            layers=layers,
            source=source,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"search space {source}: {exc}") from None


def load_space(path: Path | str | None) -> TuneSpace:
    """The default space, or a TOML file's sections merged over it.

    Raises:
        ConfigError: the file is missing or malformed.
    """
    if path is None:
        return space_from_dict({}, source="default")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space file {p} does not exist")
    try:
        with p.open("rb") as fh:
            spec = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read search space {p}: {exc}") from None
    return space_from_dict(spec, source=str(p))
