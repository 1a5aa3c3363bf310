"""The search space of ``scotsearch tune``: staircase, transport settings and layer bits.

A space maps an Optuna trial to a :class:`~scotsearch.config.MatchConfig` (and, in the joint
mode, a layer subset). It is *static*: every trial suggests the same parameters with the same
distributions, whatever ``cam`` it draws, so that multivariate TPE models the whole space and
trials from different runs (and from a beam study, for the layer bits) stay comparable.

Parameters (names as stored in the study):

* ``beta1_frac``, ``beta2_frac``, ``beta3_frac`` in [0, 1]: the three upper stair heights
  (Eq. 8 thresholds), reparametrised so that any draw is ordered (ecosystem.md §1.3):
  ``beta_1 = lo + f_1 (hi - lo)`` and ``beta_k = beta_{k-1} + f_k (hi - beta_{k-1})``. The
  first height ``beta_0`` is fixed (0 by default: the paper's first stair at ``A > 0``).
* ``gamma0`` .. ``gamma3``: the four stair widths. The marginals are normalised to sum 1, so
  only the ratios of the widths matter.
* ``eps`` (log scale), ``n_iter`` (log scale), ``exp2``, ``cam`` (none / raw / stair).
* joint mode only: ``L00`` .. ``L33`` in {0, 1}, one bit per candidate layer, named as the
  beam search names them so that both kinds of study can share a database.

Stair heights and widths are rounded to ``decimals`` (4) decimal places. The rounded value is
what the trial evaluates and records, so an exported row (which prints them with six
significant digits) re-evaluates to exactly the stored score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import BaseTrial

from scotsearch.config import MatchConfig
from scotsearch.errors import ConfigError
from scotsearch.layers import n_layers


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

N_STAIRS = 4
CAM_CHOICES = {"none", "raw", "stair"}
HEIGHT_PARAMS = ("beta1_frac", "beta2_frac", "beta3_frac")
WIDTH_PARAMS = ("gamma0", "gamma1", "gamma2", "gamma3")


def layer_param(layer_id: int) -> str:
    """Optuna parameter name of a layer bit (``L07``), shared with the beam search."""
    return f"L{layer_id:02d}"


@dataclass(frozen=True)
class Range:
    """A searched numeric setting.

    Attributes:
        low: lower bound (inclusive).
        high: upper bound (inclusive).
        log: sample on a log scale.
    """

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class TuneSpace:
    """A resolved search space.

    For ``eps``, ``n_iter``, ``exp2`` and ``cam``: a :class:`Range` (or a tuple of choices for
    ``cam``) is searched; a plain value is fixed; ``None`` means fixed at the value given on
    the command line (the base :class:`MatchConfig`).

    Attributes:
        heights: range of the three upper stair heights, or ``None`` to keep the base's.
        first_height: the fixed first stair height ``beta_0``.
        widths: range of each stair width, or ``None`` to keep the base's.
        decimals: stair heights and widths are rounded to this many decimals.
        eps: entropic regularisation.
        n_iter: Sinkhorn iterations.
        exp2: exponent on the transport plan.
        cam: marginal choices.
        layers: joint-mode candidate layer ids (``None``: every layer of the backbone).
        source: where the space came from (for messages only; not part of the digest).
    """

    heights: tuple[float, float] | None = (0.0, 1.0)
    first_height: float = 0.0
    widths: tuple[float, float] | None = (0.0, 1.0)
    decimals: int = 4
    eps: Range | float | None = Range(0.005, 0.5, True)
    n_iter: Range | int | None = Range(1, 100, True)
    exp2: Range | float | None = Range(0.25, 2.0, False)
    cam: tuple[str, ...] | str | None = ("none", "raw", "stair")
    layers: tuple[int, ...] | None = None
    source: str = "default"

    # ------------------------------------------------------------------ structure
    def layer_candidates(self, backbone: str) -> tuple[int, ...]:
        """Joint-mode candidate layers for ``backbone``."""
        n = n_layers(backbone)
        if self.layers is None:
            return tuple(range(n))
        bad = [i for i in self.layers if not 0 <= i < n]
        if bad:
            raise ConfigError(
                f"search space {self.source}: layer(s) {bad} do not exist for {backbone} "
                f"(ids 0..{n - 1})"
            )
        return self.layers

    def distributions(self, *, joint_backbone: str | None = None) -> dict[str, BaseDistribution]:
        """Every parameter of a trial with its distribution, in suggestion order.

        Args:
            joint_backbone: in joint mode, the backbone whose layers get a bit each.
        """
        dists: dict[str, BaseDistribution] = {}
        if joint_backbone is not None:
            for l in self.layer_candidates(joint_backbone):
                dists[layer_param(l)] = IntDistribution(0, 1)
        if isinstance(self.cam, tuple):
            dists["cam"] = CategoricalDistribution(list(self.cam))
        if self.heights is not None:
            for name in HEIGHT_PARAMS:
                dists[name] = FloatDistribution(0.0, 1.0)
        if self.widths is not None:
            for name in WIDTH_PARAMS:
                dists[name] = FloatDistribution(*self.widths)
        for name in ("eps", "n_iter", "exp2"):
            r = getattr(self, name)
            if isinstance(r, Range):
                cls = IntDistribution if name == "n_iter" else FloatDistribution
                dists[name] = cls(r.low, r.high, log=r.log)  # type: ignore[arg-type]
        return dists

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (what the digest covers)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d))

    def digest(self) -> str:
        """Short stable hash of the space, recorded in the study identity."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ trial <-> settings
    def heights_from_fracs(self, fracs: Sequence[float]) -> tuple[float, ...]:
        """``(beta_0, .., beta_3)`` from the three fractions (ordered by construction)."""
        assert self.heights is not None
        lo, hi = self.heights
        betas = [float(self.first_height)]
        prev = lo
        for k, f in enumerate(fracs):
            b = lo + f * (hi - lo) if k == 0 else prev + f * (hi - prev)
            # Rounding can only move a value by half a unit in the last kept decimal; clamp so
            # the order survives it.
            b = min(max(round(b, self.decimals), prev if k else lo), hi)
            betas.append(b)
            prev = b
        return tuple(betas)

    def fracs_from_heights(self, beta: Sequence[float]) -> dict[str, float]:
        """Inverse of :meth:`heights_from_fracs` (used to enqueue a known staircase)."""
        assert self.heights is not None
        lo, hi = self.heights
        if len(beta) != N_STAIRS or beta[0] != self.first_height:
            raise ConfigError(
                f"staircase {list(beta)} does not fit the search space {self.source} "
                f"({N_STAIRS} stairs, first height {self.first_height:g})"
            )
        if not all(lo <= b <= hi for b in beta[1:]):
            raise ConfigError(
                f"stair heights {list(beta[1:])} lie outside the searched range [{lo:g}, {hi:g}]"
            )
        fracs = {}
        prev = lo
        for k, (name, b) in enumerate(zip(HEIGHT_PARAMS, beta[1:])):
            span = (hi - lo) if k == 0 else (hi - prev)
            base = lo if k == 0 else prev
            fracs[name] = 0.0 if span <= 0 else min(max((b - base) / span, 0.0), 1.0)
            prev = b
        return fracs

    def params_of(
        self,
        match: MatchConfig,
        *,
        layers: Sequence[int] | None = None,
        joint_backbone: str | None = None,
    ) -> dict[str, Any]:
        """The trial parameters that reproduce ``match`` (and ``layers`` in joint mode).

        Raises:
            ConfigError: the settings cannot be expressed in this space.
        """
        dists = self.distributions(joint_backbone=joint_backbone)
        params: dict[str, Any] = {}
        if joint_backbone is not None:
            chosen = set(layers or ())
            outside = chosen - set(self.layer_candidates(joint_backbone))
            if outside:
                raise ConfigError(
                    f"layer(s) {sorted(outside)} are not candidates of the search space"
                )
            for l in self.layer_candidates(joint_backbone):
                params[layer_param(l)] = int(l in chosen)
        if "cam" in dists:
            params["cam"] = match.cam
        if self.heights is not None:
            params.update(self.fracs_from_heights(match.beta))
        if self.widths is not None:
            if len(match.gamma) != N_STAIRS:
                raise ConfigError(f"staircase widths {list(match.gamma)} need {N_STAIRS} stairs")
            params.update(dict(zip(WIDTH_PARAMS, (float(g) for g in match.gamma))))
        for name in ("eps", "n_iter", "exp2"):
            if name in dists:
                params[name] = getattr(match, name)
        for name, value in params.items():
            if not _inside(dists[name], value):
                raise ConfigError(f"{name} = {value} lies outside the search space {self.source}")
        return params

    def suggest(
        self, trial: BaseTrial, base: MatchConfig, *, joint_backbone: str | None = None
    ) -> tuple[MatchConfig, tuple[int, ...] | None]:
        """Draw one setting from ``trial``.

        Args:
            trial: an Optuna trial (or ``FixedTrial``).
            base: the command-line settings: everything the space does not search.
            joint_backbone: in joint mode, the backbone whose layer bits are suggested.

        Returns:
            The matching settings and, in joint mode, the layer subset (possibly empty).
        """
        values: dict[str, Any] = {}
        for name, dist in self.distributions(joint_backbone=joint_backbone).items():
            if isinstance(dist, CategoricalDistribution):
                values[name] = trial.suggest_categorical(name=name, choices=dist.choices)
            elif isinstance(dist, IntDistribution):
                values[name] = trial.suggest_int(
                    name=name, low=dist.low, high=dist.high, log=dist.log
                )
            else:
                assert isinstance(dist, FloatDistribution)
                values[name] = trial.suggest_float(
                    name=name, low=dist.low, high=dist.high, log=dist.log
                )
        layers = None
        if joint_backbone is not None:
            layers = tuple(
                l for l in self.layer_candidates(joint_backbone) if values[layer_param(l)] == 1
            )
        return self.match_of(values, base), layers

    def match_of(self, values: Mapping[str, Any], base: MatchConfig) -> MatchConfig:
        """The matching settings of a trial's parameter values, on top of ``base``."""
        kw: dict[str, Any] = {}
        cam = values.get("cam", self.cam if isinstance(self.cam, str) else base.cam)
        kw["cam"] = cam
        for name in ("eps", "n_iter", "exp2"):
            fixed = getattr(self, name)
            if name in values:
                kw[name] = values[name]
            elif fixed is not None and not isinstance(fixed, Range):
                kw[name] = fixed
        # Stair parameters matter only for cam = stair. They are drawn anyway (static space),
        # but the recorded settings keep the base staircase otherwise, so that an exported row
        # does not show thresholds that had no effect.
        if cam == "stair":
            if self.heights is not None:
                kw["beta"] = self.heights_from_fracs([values[n] for n in HEIGHT_PARAMS])
            if self.widths is not None:
                kw["gamma"] = tuple(round(float(values[n]), self.decimals) for n in WIDTH_PARAMS)
        return dataclasses.replace(base, **kw)


def _inside(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    return dist.low <= value <= dist.high


# ---------------------------------------------------------------------- parsing
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
            n_iter=_range("n_iter", merged["n_iter"], integer=True),
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
