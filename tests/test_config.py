"""The compat presets: what the CLI resolves for every compat x dataset x command x override.

The expected values below are written out by hand, not read from the library's table, so that
this test pins the resolution itself: it was first run against the code that decided the
presets in five places, and must keep passing against the one table that replaced them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import scotsearch.evaluate
import scotsearch.search.beam_study
import scotsearch.search.tune
import scotsearch.study
from scotsearch import cli
from scotsearch.commands import common
from scotsearch.commands import tune as tune_cmd
from scotsearch.config import DEFAULT_GAMMA
from scotsearch.config import MatchConfig
from scotsearch.data.pairs import Dataset
from scotsearch.errors import ConfigError
from scotsearch.layers import format_layers
from scotsearch.presets import COMMAND_KINDS
from scotsearch.presets import COMPAT_PRESETS
from scotsearch.presets import DATASET_PRESETS
from scotsearch.presets import CompatPreset
from scotsearch.presets import dataset_exp2
from scotsearch.presets import published_layers
from scotsearch.presets import reference_algorithm
from scotsearch.presets import resolve_match
from scotsearch.presets import resolve_profile


COMPATS = (None, "scot", "hpf", "paper")
DATASETS = ("demo", "spair", "pfpascal", "pfwillow")
COMMANDS = ("evaluate", "beam", "tune")

#: Each override alone (plus none at all), as command-line words.
OVERRIDES: dict[str, list[str]] = {
    "none": [],
    **{f"variant={v}": ["--variant", v] for v in (
        "cos-nn", "cos-rhm", "ot-nn", "ot-rhm", "ot-rhm-cam", "ot-rhm-stair")},
    **{f"sim={s}": ["--sim", s] for s in ("cos", "cosGeo", "OT", "OTGeo")},
    "cam=raw": ["--cam", "raw"],
    "cam=none": ["--cam", "none"],
    "n_iter=7": ["--n-iter", "7"],
    "exp1=2.5": ["--exp1", "2.5"],
    "exp2=0.7": ["--exp2", "0.7"],
    "eps=0.1": ["--eps", "0.1"],
    "ncells=4096": ["--ncells", "4096"],
    "stairs": ["--beta", "0,0.3", "--gamma", "0.6,0.4"],
    "image_side=128": ["--image-side", "128"],
    "backbone=resnet50": ["--backbone", "resnet50"],
    "algorithm=fixed": ["--algorithm", "fixed"],
    "algorithm=reference": ["--algorithm", "reference"],
}
BEAM_ONLY = ("algorithm=fixed", "algorithm=reference")

# --- today's rules, written out --------------------------------------------------------------
VARIANTS = {
    "cos-nn": ("cos", False, "none"),
    "cos-rhm": ("cos", True, "none"),
    "ot-nn": ("ot", False, "none"),
    "ot-rhm": ("ot", True, "none"),
    "ot-rhm-cam": ("ot", True, "raw"),
    "ot-rhm-stair": ("ot", True, "stair"),
}
SIMS = {"cos": ("cos", False), "cosGeo": ("cos", True), "OT": ("ot", False),
        "OTGeo": ("ot", True)}
PROFILE_FIELDS = {  # name -> (image_side, upsample_small, prune_margin, first_stair_always)
    "scot": (300, True, False, True),
    "hpf": (300, False, True, True),
    "paper": (300, True, False, False),
}
EXP2 = {"demo": 1.0, "spair": 1.0, "pfpascal": 0.5, "pfwillow": 0.5}
LAYERS = {
    ("spair", "resnet50"): "0,11,12,13",
    ("spair", "resnet101"): "0,19,27,28,29,30",
    ("pfpascal", "resnet101"): "2,22,24,25,27,28,29",
    ("pfwillow", "resnet101"): "2,22,24,25,27,28,29",
    ("pfpascal", "resnet50"): "2,7,11,12,13",
    ("pfwillow", "resnet50"): "2,7,11,12,13",
}


def expected(command: str, compat: str | None, dataset: str, override: str) -> dict[str, Any]:
    """What the CLI resolved before the presets moved into one table."""
    words = OVERRIDES[override]
    given = dict(zip(words[::2], words[1::2]))
    variant = given.get("--variant")
    if variant is None:
        variant = "ot-rhm" if command == "beam" else "ot-rhm-stair"
        if command == "beam" and compat == "hpf" and "--sim" not in given:
            variant = "cos-rhm"
    similarity, rhm, cam = VARIANTS[variant]
    if "--sim" in given:
        similarity, rhm = SIMS[given["--sim"]]
    cam = given.get("--cam", cam)
    if similarity == "cos" and cam != "none":
        return {"error": "CAM marginals need OT matching; use --cam none with cosine matching"}
    if command == "tune" and similarity != "ot":
        return {"error": "tune searches transport settings; use an OT variant "
                         "(--variant ot-rhm-stair, ot-rhm, ...)"}
    name = compat or "scot"
    side, up, prune, first = PROFILE_FIELDS[name]
    out: dict[str, Any] = {
        "match": {
            "similarity": similarity, "rhm": rhm, "cam": cam,
            "eps": float(given.get("--eps", 0.05)),
            "n_iter": int(given.get("--n-iter", 50 if compat == "paper" else 1)),
            "exp1": float(given.get("--exp1", 3.0 if compat == "hpf" else 1.0)),
            "exp2": float(given.get("--exp2", EXP2[dataset])),
            "beta": [0.0, 0.3] if "--beta" in given else [0.0, 0.4, 0.5, 0.6],
            "gamma": [0.6, 0.4] if "--gamma" in given else [0.5, 0.3, 0.1, 0.1],
            "ncells": int(given.get("--ncells", 8192)),
        },
        "profile": (name, int(given.get("--image-side", side)), up, prune, first),
    }
    backbone = given.get("--backbone", "resnet101")
    if command == "beam":
        algorithm = given.get("--algorithm", "auto")
        out["reference"] = (compat in ("scot", "hpf") if algorithm == "auto"
                            else algorithm == "reference")
    else:
        out["layers"] = LAYERS[("spair" if dataset == "demo" else dataset, backbone)]
    return out


# --- the CLI path, stopped where the resolved objects are handed on --------------------------
class _Stop(Exception):
    pass


class _FakeSource:
    def __init__(self, backbone: str) -> None:
        self.backbone = backbone

    def describe(self) -> dict[str, str]:
        return {"backbone": self.backbone, "weights": "fake", "weights_digest": "fake"}


def _resolve(command: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def open_dataset(args: argparse.Namespace) -> Dataset:
        # A dataset of the name, as the readers give it (tests/test_data_readers.py checks
        # their default_exp2; the demo is read by the SPair reader under its own name).
        return Dataset(name=args.dataset, split=args.split or "test", root=Path("."), pairs=(),
                       default_thres="bbox")

    class FakeEvaluator:
        def __init__(self, dataset: Dataset, source: Any, **kw: Any) -> None:
            seen.update(match=kw["match"], profile=kw["profile"])
            if command == "evaluate":
                raise _Stop

    def run_beam(evaluator: Any, **kw: Any) -> None:
        seen["reference"] = kw["reference"]
        raise _Stop

    def run_tune(evaluator: Any, **kw: Any) -> None:
        seen["layers"] = kw["baseline_layers"]
        raise _Stop

    monkeypatch.setattr(common, "open_dataset", open_dataset)
    monkeypatch.setattr(common, "feature_source",
                        lambda args, device: _FakeSource(args.backbone))
    # the commands import these where they run (their modules load without torch)
    monkeypatch.setattr(scotsearch.evaluate, "Evaluator", FakeEvaluator)
    monkeypatch.setattr(scotsearch.search.beam_study, "run_beam", run_beam)
    monkeypatch.setattr(scotsearch.study, "open_storage", lambda url: None)
    monkeypatch.setattr(tune_cmd, "open_shared_storage", lambda url: None)
    monkeypatch.setattr(scotsearch.search.tune, "run_tune", run_tune)

    extra = ["--study", "t", "--trials", "1"] if command == "tune" else []
    args = _parser().parse_args(["-q", command, *extra, *argv])
    try:
        args._run(args)
    except ConfigError as exc:
        return {"error": str(exc)}
    except _Stop:
        pass
    else:
        raise AssertionError("the command ran past the point where it builds its evaluator")
    m, p = seen["match"], seen["profile"]
    out: dict[str, Any] = {
        "match": m.to_dict(),
        "profile": (p.name, p.image_side, p.upsample_small, p.prune_margin,
                    p.first_stair_always),
    }
    if command == "beam":
        out["reference"] = seen["reference"]
    elif command == "evaluate":
        out["layers"] = args.layers
    else:
        out["layers"] = ",".join(map(str, seen["layers"]))
    return out


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return cli.build_parser()


CASES = [
    (command, compat, dataset, override)
    for command in COMMANDS
    for compat in COMPATS
    for dataset in DATASETS
    for override in OVERRIDES
    if command == "beam" or override not in BEAM_ONLY
]


@pytest.mark.parametrize(("command", "compat", "dataset", "override"), CASES)
def test_cli_resolution_is_pinned(
    command: str, compat: str | None, dataset: str, override: str,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were: not in the repo
    argv = ["--dataset", dataset, *OVERRIDES[override]]
    if compat is not None:
        argv += ["--compat", compat]
    assert _resolve(command, argv, monkeypatch) == expected(command, compat, dataset, override)
    assert not any(tmp_path.iterdir())


def test_pinned_profiles_are_the_profile_fields() -> None:
    # the tuple form above covers every field of Profile
    from scotsearch.config import Profile

    assert [f.name for f in dataclasses.fields(Profile)] == [
        "name", "image_side", "upsample_small", "prune_margin", "first_stair_always"]


# --- the README's tables come from the library's --------------------------------------------
README = Path(__file__).resolve().parents[1] / "README.md"


def _strip_note(text: str) -> str:
    # "1 (SCOT's code)" -> "1": a trailing parenthesised remark is for the reader
    return re.sub(r"\s*\([^()]*\)$", "", text.strip())


def _readme_table(*start: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column headers, {row label: cells}) of the README table whose header starts so."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[: len(start)] == list(start):
            break
    else:
        raise AssertionError(f"README has no table whose header starts with {start}")
    header = [_strip_note(c) for c in cells[1:]]
    rows: dict[str, list[str]] = {}
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[_strip_note(cells[0])] = [_strip_note(c) for c in cells[1:]]
    return header, rows


def _resolve_as(row: list[str], header: list[str]) -> list[str]:
    # "as `scot`" repeats the cell of column `scot`
    out = []
    for cell in row:
        m = re.fullmatch(r"as `([^`]+)`", cell)
        out.append(row[header.index(f"`{m.group(1)}`")] if m else cell)
    return out


def _variant_cell(*names: str) -> str:
    return f"`{names[0]}`" if len(set(names)) == 1 else f"differs: {names}"


COMPAT_ROWS: dict[str, Callable[[CompatPreset], str]] = {
    "image resize": lambda c: (
        f"longer side to {c.profile.image_side} always" if c.profile.upsample_small
        else f"only shrinks images larger than {c.profile.image_side}"),
    "hyperpixels whose receptive field leaves the image by more than a stride":
        lambda c: "pruned" if c.profile.prune_margin else "kept",
    "staircase at CAM exactly 0":
        lambda c: f"{DEFAULT_GAMMA[0]:g}" if c.profile.first_stair_always else "0",
    "Sinkhorn iterations": lambda c: str(c.n_iter),
    "cosine exponent `exp1`": lambda c: f"{c.exp1:g}",
    "default `--variant` of `evaluate` and `tune`":
        lambda c: _variant_cell(c.variants["evaluate"], c.variants["tune"]),
    "default `--variant` of `beam`": lambda c: _variant_cell(c.variants["beam"]),
    "beam search algorithm": lambda c: "reference" if c.reference_beam else "fixed",
}


def test_readme_compat_table_is_the_presets_table() -> None:
    header, rows = _readme_table("", "no `--compat` (default)")
    columns = {"no `--compat`": None, **{f"`{k}`": k for k in COMPAT_PRESETS if k is not None}}
    assert header == list(columns)
    assert sorted(rows) == sorted(COMPAT_ROWS)
    assert set(COMMAND_KINDS) == {"evaluate", "beam", "tune"}  # the rows name every kind
    for label, cells in rows.items():
        want = [COMPAT_ROWS[label](COMPAT_PRESETS[columns[h]]) for h in header]
        assert _resolve_as(cells, header) == want, label


def test_readme_dataset_table_is_the_presets_table() -> None:
    header, rows = _readme_table("`--dataset`", "`exp2` (default)")
    assert header == ["`exp2`", "layers without `--layers`, `resnet50`", "`resnet101`"]
    assert sorted(rows) == sorted(f"`{d}`" for d in DATASET_PRESETS)
    for label, cells in rows.items():
        dataset = label.strip("`")
        want = [f"{dataset_exp2(dataset):.1f}"] + [
            f"`{format_layers(published_layers(dataset, bb))}`"
            for bb in ("resnet50", "resnet101")
        ]
        got = [
            rows[m.group(1)][k] if (m := re.fullmatch(r"as (`[^`]+`)", c)) else c
            for k, c in enumerate(cells)
        ]
        assert got == want, label


def test_readme_names_where_the_table_is() -> None:
    text = README.read_text(encoding="utf-8")
    assert "`COMPAT_PRESETS`" in text and "`DATASET_PRESETS`" in text
    assert "`scotsearch/presets.py`" in text


def test_library_resolution_matches_the_cli_defaults() -> None:
    # what a library user gets without overrides is the pinned CLI default of each case
    for command in COMMANDS:
        for compat in COMPATS:
            for dataset in DATASETS:
                want = expected(command, compat, dataset, "none")
                m = resolve_match(compat, dataset, command)
                p = resolve_profile(compat)
                assert m.to_dict() == want["match"]
                assert (p.name, p.image_side, p.upsample_small, p.prune_margin,
                        p.first_stair_always) == want["profile"]
                if command == "beam":
                    assert reference_algorithm(compat) == want["reference"]
                else:
                    assert format_layers(published_layers(dataset, "resnet101")) == want["layers"]


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown compat mode 'x'"):
        resolve_match("x", "spair", "beam")
    with pytest.raises(ConfigError, match="unknown command kind"):
        resolve_match(None, "spair", "search")
    with pytest.raises(ConfigError, match="unknown variant"):
        resolve_match(None, "spair", "beam", variant="ot")
    with pytest.raises(ConfigError, match="unknown matching setting"):
        resolve_match(None, "spair", "beam", n_iters=3)
    with pytest.raises(ConfigError, match="no published layer set"):
        published_layers("synthetic", "resnet50")
    with pytest.raises(ConfigError, match="algorithm must be"):
        reference_algorithm(None, "exact")
    # a dataset the table does not list takes MatchConfig's exp2
    assert resolve_match(None, "synthetic", "evaluate").exp2 == MatchConfig().exp2
