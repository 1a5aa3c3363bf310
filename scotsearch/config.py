"""Matching settings, reference-compatibility profiles and run configurations.

Which profile and which defaults each ``--compat`` mode, dataset and command takes is one
table, :mod:`scotsearch.presets`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers


@dataclass(frozen=True)
class Profile:
    """How images are prepared and hyperpixels chosen: one reference's conventions.

    Attributes:
        name: ``scot``, ``hpf`` or ``paper``.
        image_side: target length of the longer image side.
        upsample_small: resize images whose longer side is below ``image_side`` too (SCOT
            always rescales; HPF only shrinks, §1.3).
        prune_margin: HPF drops hyperpixels whose receptive-field box reaches more than one
            stride outside the image (§2); SCOT keeps all.
        first_stair_always: SCOT's code gives weight 0.5 even where the CAM is exactly 0;
            the paper's Eq. 8 (strict ``A > 0``) gives 0 there (§4.2).
    """

    name: str
    image_side: int = 300
    upsample_small: bool = True
    prune_margin: bool = False
    first_stair_always: bool = True


#: Paper Eq. 8 defaults: stair heights (thresholds) and stair widths (increments).
DEFAULT_BETA = (0.0, 0.4, 0.5, 0.6)
DEFAULT_GAMMA = (0.5, 0.3, 0.1, 0.1)

#: The paper's ablation variants (Tables 3 and 4) as (similarity, rhm, cam).
VARIANTS = {
    "cos-nn": ("cos", False, "none"),
    "cos-rhm": ("cos", True, "none"),  # = HPF
    "ot-nn": ("ot", False, "none"),
    "ot-rhm": ("ot", True, "none"),
    "ot-rhm-cam": ("ot", True, "raw"),
    "ot-rhm-stair": ("ot", True, "stair"),  # = SCOT
}
#: SCOT's ``--sim`` names.
SIM_NAMES = {
    "cos": ("cos", False),
    "cosGeo": ("cos", True),
    "OT": ("ot", False),
    "OTGeo": ("ot", True),
}


@dataclass(frozen=True)
class MatchConfig:
    """Everything that turns hyperpixel features into keypoint predictions.

    Attributes:
        similarity: ``ot`` (SCOT) or ``cos`` (HPF).
        rhm: apply regularised Hough matching.
        cam: marginals from ``none`` (uniform), ``raw`` CAM or the ``stair`` case of Eq. 8.
        eps: entropic regularisation of the transport.
        n_iter: Sinkhorn iterations; 1 reproduces SCOT's code (§3.2), the paper says 50.
        exp1: exponent on ``max(cos, 0)`` for cosine matching (HPF: 3). SCOT ignores it in
            OT modes (hard-coded 1.0, §3.2), and so does scotsearch.
        exp2: exponent on the transport plan (0.5 PF-PASCAL/WILLOW, 1.0 SPair).
        beta: stair heights (thresholds) of Eq. 8.
        gamma: stair widths (increments) of Eq. 8.
        ncells: Hough space cells (8192).
    """

    similarity: str = "ot"
    rhm: bool = True
    cam: str = "none"
    eps: float = 0.05
    n_iter: int = 1
    exp1: float = 1.0
    exp2: float = 1.0
    beta: tuple[float, ...] = DEFAULT_BETA
    gamma: tuple[float, ...] = DEFAULT_GAMMA
    ncells: int = 8192

    def __post_init__(self) -> None:
        if self.similarity not in ("ot", "cos"):
            raise ConfigError(f"similarity must be 'ot' or 'cos', not {self.similarity!r}")
        if self.cam not in ("none", "raw", "stair"):
            raise ConfigError(f"cam must be none, raw or stair, not {self.cam!r}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ConfigError(f"eps must be a positive number, got {self.eps}")
        if int(self.n_iter) != self.n_iter or self.n_iter < 1:
            raise ConfigError(f"n_iter must be an integer >= 1, got {self.n_iter}")
        for name in ("exp1", "exp2"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"{name} must be a positive number, got {v}")
        if len(self.beta) != len(self.gamma) or not self.beta:
            raise ConfigError("beta and gamma must have the same, non-zero length")
        if list(self.beta) != sorted(self.beta):
            raise ConfigError(f"stair heights beta must be ascending, got {list(self.beta)}")
        if any(g < 0 for g in self.gamma) or sum(self.gamma) <= 0:
            raise ConfigError(
                f"stair widths gamma must be >= 0 with a positive sum, got {list(self.gamma)}"
            )
        if self.ncells < 1:
            raise ConfigError(f"ncells must be positive, got {self.ncells}")

    @classmethod
    def from_variant(cls, variant: str, **overrides: Any) -> MatchConfig:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}; choose one of {sorted(VARIANTS)}")
        similarity, rhm, cam = VARIANTS[variant]
        return cls(similarity=similarity, rhm=rhm, cam=cam, **overrides)

    @property
    def variant(self) -> str:
        for name, (s, r, c) in VARIANTS.items():
            if (s, r, c) == (self.similarity, self.rhm, self.cam):
                return name
        return f"{self.similarity}-{'rhm' if self.rhm else 'nn'}-{self.cam}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["beta"] = list(self.beta)
        d["gamma"] = list(self.gamma)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown matching setting(s): {', '.join(unknown)}")
        d = dict(d)
        for k in ("beta", "gamma"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)


#: Columns of an exported configuration row, in order (``scotsearch export``), read back
#: by ``scotsearch evaluate --config``.
RUN_COLUMNS = (
    "dataset", "split", "backbone", "weights", "weights_digest", "compat", "layers",
    "similarity", "rhm", "cam", "eps", "n_iter", "exp1", "exp2", "beta", "gamma", "ncells",
    "alpha", "thres", "image_side",
)


@dataclass(frozen=True)
class RunConfig:
    """A complete, reproducible matching configuration: what an export row holds.

    ``weights_digest`` records which weights produced the score; re-evaluating with other
    weights is allowed but reported.
    """

    dataset: str
    split: str
    backbone: str
    layers: tuple[int, ...]
    match: MatchConfig
    weights: str = "IMAGENET1K_V1"
    weights_digest: str = ""
    compat: str = "scot"
    alpha: float = 0.1
    thres: str = "auto"
    #: longer image side fed to the network; ``None``: the compat profile's (300)
    image_side: int | None = None

    def to_row(self) -> dict[str, Any]:
        m = self.match
        return {
            "dataset": self.dataset,
            "split": self.split,
            "backbone": self.backbone,
            "weights": self.weights,
            "weights_digest": self.weights_digest,
            "compat": self.compat,
            "layers": format_layers(self.layers),
            "similarity": m.similarity,
            "rhm": int(m.rhm),
            "cam": m.cam,
            "eps": m.eps,
            "n_iter": m.n_iter,
            "exp1": m.exp1,
            "exp2": m.exp2,
            "beta": ",".join(f"{v:g}" for v in m.beta),
            "gamma": ",".join(f"{v:g}" for v in m.gamma),
            "ncells": m.ncells,
            "alpha": self.alpha,
            "thres": self.thres,
            "image_side": "" if self.image_side is None else int(self.image_side),
        }

    @classmethod
    def from_identity(
        cls, ident: dict[str, Any], *, layers: tuple[int, ...], match: MatchConfig
    ) -> RunConfig:
        """The configuration of one trial of a study whose identity is ``ident``."""
        return cls(
            dataset=str(ident["dataset"]),
            split=str(ident["split"]),
            backbone=str(ident["backbone"]),
            layers=tuple(layers),
            match=match,
            weights=str(ident.get("weights", "")),
            weights_digest=str(ident.get("weights_digest", "")),
            compat=str(ident.get("compat", "scot")),
            alpha=float(ident["alpha"]),
            thres=str(ident["thres"]),
            image_side=ident.get("image_side"),
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunConfig:
        # image_side is optional: rows written by hand may leave the profile's default
        missing = [c for c in RUN_COLUMNS if c not in row and c != "image_side"]
        if missing:
            raise ConfigError(f"config row lacks column(s): {', '.join(missing)}")
        try:
            match = MatchConfig(
                similarity=str(row["similarity"]),
                rhm=str(row["rhm"]).strip().lower() in ("1", "true", "yes"),
                cam=str(row["cam"]),
                eps=float(row["eps"]),
                n_iter=int(float(row["n_iter"])),
                exp1=float(row["exp1"]),
                exp2=float(row["exp2"]),
                beta=tuple(float(v) for v in str(row["beta"]).split(",")),
                gamma=tuple(float(v) for v in str(row["gamma"]).split(",")),
                ncells=int(float(row["ncells"])),
            )
            layers = tuple(int(v) for v in str(row["layers"]).replace(" ", "").split(","))
            return cls(
                dataset=str(row["dataset"]),
                split=str(row["split"]),
                backbone=str(row["backbone"]),
                layers=layers,
                match=match,
                weights=str(row["weights"]),
                weights_digest=str(
                    row["weights_digest"] if row["weights_digest"] == row["weights_digest"] else ""
                ),
                compat=str(row["compat"]),
                alpha=float(row["alpha"]),
                thres=str(row["thres"]),
                image_side=_optional_int(row.get("image_side")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"malformed config row: {exc}") from None


def _optional_int(value: Any) -> int | None:
    # Empty cells (and pandas' NaN for them) mean "not recorded".
    if value is None or value != value or str(value).strip() == "":
        return None
    return int(float(value))
