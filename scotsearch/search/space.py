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

A space is written as TOML (:mod:`scotsearch.search.space_file`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.distributions import CategoricalDistribution
from optuna.distributions import FloatDistribution
from optuna.distributions import IntDistribution
from optuna.trial import BaseTrial

from scotsearch.config import MatchConfig
from scotsearch.errors import ConfigError
from scotsearch.layers import n_layers
from scotsearch.study import layer_param


#: Stairs of the staircase: heights ``beta_0`` .. ``beta_3``, widths ``gamma_0`` .. ``gamma_3``.
N_STAIRS = 4
CAM_CHOICES = {"none", "raw", "stair"}
HEIGHT_PARAMS = ("beta1_frac", "beta2_frac", "beta3_frac")
WIDTH_PARAMS = ("gamma0", "gamma1", "gamma2", "gamma3")


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
            for lid in self.layer_candidates(joint_backbone):
                dists[layer_param(lid)] = IntDistribution(0, 1)
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
            for lid in self.layer_candidates(joint_backbone):
                params[layer_param(lid)] = int(lid in chosen)
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
                lid
                for lid in self.layer_candidates(joint_backbone)
                if values[layer_param(lid)] == 1
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
