"""The compat presets: one table of every default that ``--compat``, the dataset or the kind
of command decides, and the functions that resolve a run's settings from it.

Every deliberate reference quirk that scotsearch reproduces is a field of one row of
``COMPAT_PRESETS`` (reference-behaviour.md §12); the matching maths takes them as explicit
arguments. The CLI and library users resolve their settings alike, through
:func:`resolve_match`, :func:`resolve_profile` and :func:`reference_algorithm`; the README's
compatibility table is checked against this module (tests/test_config.py).

Examples:
    >>> resolve_match("hpf", "pfpascal", "beam").variant
    'cos-rhm'
    >>> m = resolve_match("paper", "pfwillow", "evaluate", eps=0.1)
    >>> (m.variant, m.n_iter, m.exp2, m.eps)
    ('ot-rhm-stair', 50, 0.5, 0.1)
    >>> resolve_profile("hpf", image_side=200).image_side
    200
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from scotsearch.config import SIM_NAMES
from scotsearch.config import VARIANTS
from scotsearch.config import MatchConfig
from scotsearch.config import Profile
from scotsearch.errors import ConfigError


#: The kinds of command whose defaults differ: scoring one subset, searching layers, tuning.
COMMAND_KINDS = ("evaluate", "beam", "tune")


@dataclass(frozen=True)
class CompatPreset:
    """What one ``--compat`` mode (or its absence) sets unless the user says otherwise.

    Attributes:
        profile: image preparation and hyperpixel conventions.
        n_iter: Sinkhorn iterations (1 is SCOT's code, §3.2; the paper says 50).
        exp1: exponent on ``max(cos, 0)`` for cosine matching (HPF: 3).
        reference_beam: what ``--algorithm auto`` means: the references' beam search (True)
            or the fixed one (:mod:`scotsearch.search.beam`).
        variants: the default ``--variant`` per command kind (``COMMAND_KINDS``).
    """

    profile: Profile
    n_iter: int
    exp1: float
    reference_beam: bool
    variants: Mapping[str, str]


# The references searched layers with CAM off (reference-behaviour.md §8), and scored the
# found subset with SCOT's full matcher.
_SCOT_VARIANTS = MappingProxyType(
    {"evaluate": "ot-rhm-stair", "beam": "ot-rhm", "tune": "ot-rhm-stair"}
)
_SCOT = Profile(name="scot")

#: One row per ``--compat`` value; ``None`` is no ``--compat``: SCOT's conventions with the
#: fixed beam search.
COMPAT_PRESETS: dict[str | None, CompatPreset] = {
    None: CompatPreset(profile=_SCOT, n_iter=1, exp1=1.0, reference_beam=False,
                       variants=_SCOT_VARIANTS),
    "scot": CompatPreset(profile=_SCOT, n_iter=1, exp1=1.0, reference_beam=True,
                         variants=_SCOT_VARIANTS),
    # HPF's beam search scored with its own matcher: cosine similarity + RHM. A --sim name
    # replaces its similarity and RHM; its CAM is off, as in the other modes' beam variant.
    "hpf": CompatPreset(
        profile=Profile(name="hpf", upsample_small=False, prune_margin=True),
        n_iter=1, exp1=3.0, reference_beam=True,
        variants=MappingProxyType({**_SCOT_VARIANTS, "beam": "cos-rhm"}),
    ),
    "paper": CompatPreset(
        profile=Profile(name="paper", first_stair_always=False),
        n_iter=50, exp1=1.0, reference_beam=False, variants=_SCOT_VARIANTS,
    ),
}

#: The ``--compat`` names, each with its own profile.
PROFILES: dict[str, Profile] = {
    name: preset.profile for name, preset in COMPAT_PRESETS.items() if name is not None
}


@dataclass(frozen=True)
class DatasetPreset:
    """A benchmark's SCOT settings.

    Attributes:
        exp2: exponent on the transport plan.
        layers_of: whose published layer sets apply (the demo is SPair-like).
    """

    exp2: float
    layers_of: str


#: SCOT's per-dataset settings. Datasets not listed (synthetic ones, for instance) take
#: MatchConfig's defaults. TSS is not listed: its exp2 is MatchConfig's 1.0 (SCOT's
#: evaluate_map_TSS_CAM.py default, §3.2) and SCOT publishes only a ResNet-101 set for it.
DATASET_PRESETS: dict[str, DatasetPreset] = {
    "spair": DatasetPreset(exp2=1.0, layers_of="spair"),
    "pfpascal": DatasetPreset(exp2=0.5, layers_of="pfpascal"),
    "pfwillow": DatasetPreset(exp2=0.5, layers_of="pfwillow"),
    "demo": DatasetPreset(exp2=1.0, layers_of="spair"),
}

#: Layer sets published by SCOT (reference-behaviour.md §10.1), used when no layers are
#: given. The demo uses the SPair-71k sets.
PUBLISHED_LAYERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("spair", "resnet50"): (0, 11, 12, 13),
    ("spair", "resnet101"): (0, 19, 27, 28, 29, 30),
    ("pfpascal", "resnet101"): (2, 22, 24, 25, 27, 28, 29),
    ("pfwillow", "resnet101"): (2, 22, 24, 25, 27, 28, 29),
    ("tss", "resnet101"): (2, 22, 24, 25, 27, 28, 29),  # SCOT's README command for TSS
    ("pfpascal", "resnet50"): (2, 7, 11, 12, 13),  # HPF's PF-PASCAL set (SCOT publishes none)
    ("pfwillow", "resnet50"): (2, 7, 11, 12, 13),
    ("caltech", "resnet50"): (2, 7, 11, 12, 13),  # HPF's Caltech-101 set (its README)
}


def compat_preset(compat: str | None) -> CompatPreset:
    """The row of ``COMPAT_PRESETS`` for ``--compat`` (``None``: no ``--compat``).

    Raises:
        ConfigError: an unknown compat mode.
    """
    key = compat or None
    if key not in COMPAT_PRESETS:
        raise ConfigError(f"unknown compat mode {compat!r}; choose one of {sorted(PROFILES)}")
    return COMPAT_PRESETS[key]


def get_profile(name: str | None) -> Profile:
    """The profile for ``--compat`` (``None`` means scotsearch's default, SCOT's)."""
    return compat_preset(name).profile


def dataset_exp2(dataset: str) -> float:
    """SCOT's plan exponent for a dataset (MatchConfig's default for unlisted ones)."""
    preset = DATASET_PRESETS.get(dataset)
    return preset.exp2 if preset is not None else MatchConfig.exp2


def published_layers(dataset: str, backbone: str) -> tuple[int, ...]:
    """SCOT's (or HPF's) published layer set for a dataset and backbone.

    Raises:
        ConfigError: no set is published for the combination.
    """
    preset = DATASET_PRESETS.get(dataset)
    key = (preset.layers_of if preset is not None else dataset, backbone)
    if key not in PUBLISHED_LAYERS:
        raise ConfigError(f"no published layer set for {dataset} with {backbone}; give layers")
    return PUBLISHED_LAYERS[key]


def default_variant(compat: str | None, command: str) -> str:
    """The variant a command of kind ``command`` uses without ``--variant``/``--sim``."""
    if command not in COMMAND_KINDS:
        raise ConfigError(f"unknown command kind {command!r}; choose one of {COMMAND_KINDS}")
    return compat_preset(compat).variants[command]


def reference_algorithm(compat: str | None, algorithm: str = "auto") -> bool:
    """Whether a beam search runs the references' algorithm.

    Args:
        compat: the compat mode; decides ``auto``.
        algorithm: ``auto``, ``reference`` or ``fixed``.
    """
    if algorithm == "auto":
        return compat_preset(compat).reference_beam
    if algorithm not in ("reference", "fixed"):
        raise ConfigError(f"algorithm must be auto, reference or fixed, not {algorithm!r}")
    return algorithm == "reference"


def resolve_profile(compat: str | None = None, *, image_side: int | None = None) -> Profile:
    """The compat mode's profile, with another longer image side when one is given."""
    profile = get_profile(compat)
    if image_side is not None:
        profile = dataclasses.replace(profile, image_side=image_side)
    return profile


def resolve_match(
    compat: str | None,
    dataset: str,
    command: str,
    *,
    variant: str | None = None,
    sim: str | None = None,
    **overrides: Any,
) -> MatchConfig:
    """The matching settings of a run: the presets of the table, then the user's choices.

    Args:
        compat: ``scot``, ``hpf``, ``paper`` or ``None`` (no ``--compat``).
        dataset: the dataset's name (decides ``exp2``).
        command: ``evaluate``, ``beam`` or ``tune`` (decides the default variant).
        variant: one of the paper's ablation variants (``config.VARIANTS``).
        sim: SCOT's ``--sim`` name; overrides the variant's similarity and RHM.
        **overrides: MatchConfig fields (``cam``, ``eps``, ``n_iter``, ``exp1``, ``exp2``,
            ``beta``, ``gamma``, ``ncells``); ``None`` means not given.

    Raises:
        ConfigError: unknown names, or CAM marginals asked for with cosine matching.
    """
    chosen = {k: v for k, v in overrides.items() if v is not None}
    fields = {f.name for f in dataclasses.fields(MatchConfig)} - {"similarity", "rhm"}
    unknown = sorted(set(chosen) - fields)
    if unknown:
        raise ConfigError(f"unknown matching setting(s): {', '.join(unknown)}")
    preset = compat_preset(compat)
    name = variant if variant is not None else default_variant(compat, command)
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}")
    similarity, rhm, cam = VARIANTS[name]
    if sim is not None:
        if sim not in SIM_NAMES:
            raise ConfigError(f"unknown --sim name {sim!r}; choose one of {sorted(SIM_NAMES)}")
        similarity, rhm = SIM_NAMES[sim]
    cam = chosen.pop("cam", cam)
    if similarity == "cos" and cam != "none":
        raise ConfigError("CAM marginals need OT matching; use --cam none with cosine matching")
    settings: dict[str, Any] = {
        "n_iter": preset.n_iter,
        "exp1": preset.exp1,
        "exp2": dataset_exp2(dataset),
        **chosen,
    }
    return MatchConfig(similarity=similarity, rhm=rhm, cam=cam, **settings)

