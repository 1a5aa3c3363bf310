"""Export: study -> CSV rows that re-evaluate to the stored PCK."""

from __future__ import annotations

import argparse
import csv
import io

import optuna
import pytest

from scotsearch import study as st
from scotsearch.config import RUN_COLUMNS
from scotsearch.config import MatchConfig
from scotsearch.config import RunConfig
from scotsearch.errors import ScotsearchError
from scotsearch.evaluate import Evaluator
from scotsearch.export import export_rows
from scotsearch.export import select_rows
from scotsearch.export import write_csv
from scotsearch.presets import get_profile
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


def make_evaluator(match: MatchConfig) -> Evaluator:
    ds = synthetic_dataset(3, image_hw=(32, 48), n_kps=5, seed=2)
    src = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    return Evaluator(ds, src, match=match, profile=get_profile("scot"))


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from scotsearch.search.beam_study import run_beam

    url = f"sqlite:///{tmp_path_factory.mktemp('export')}/s.db"
    ev = make_evaluator(MatchConfig.from_variant("ot-rhm", eps=0.05, exp2=0.5))
    out = run_beam(ev, study="b", storage=url, beam=2, max_layers=2, layers=range(4), chunk=4)
    return url, out


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_rows_are_sorted_and_complete(searched):
    url, out = searched
    rows = export_rows(st.open_study("b", url, create=False))
    assert len(rows) == len(out.result.candidates)
    assert [r["pck"] for r in rows] == sorted((r["pck"] for r in rows), reverse=True)
    assert rows[0]["pck"] == out.best_pck
    assert rows[0]["layers"] == out.result.best.key
    r = rows[0]
    assert (r["dataset"], r["split"], r["backbone"], r["compat"], r["thres"]) == (
        "synthetic", "val", "resnet50", "scot", "bbox")
    assert (r["weights"], r["weights_digest"], r["alpha"]) == ("synthetic", "synthetic", 0.1)
    assert (r["similarity"], r["rhm"], r["cam"], r["exp2"]) == ("ot", 1, "none", 0.5)
    assert r["study"] == "b" and isinstance(r["trial"], int) and r["depth"] in (0, 1)
    assert {"pooled_pck", "pck_a", "pck_b"} <= set(r)


def test_exported_csv_re_evaluates_to_stored_pck(searched, tmp_path):
    url, _ = searched
    rows = select_rows(export_rows(st.open_study("b", url, create=False)), top=3)
    path = tmp_path / "best.csv"
    write_csv(rows, path)
    text = path.read_text()
    header = text.splitlines()[0].split(",")
    assert header[: len(RUN_COLUMNS)] == list(RUN_COLUMNS)
    assert header[len(RUN_COLUMNS) :] == [
        "study", "trial", "pck", "pooled_pck", "depth", "layer_names", "pck_a", "pck_b"
    ]
    back = read_csv(text)
    assert len(back) == 3
    for row in back:
        cfg = RunConfig.from_row(row)
        ev = make_evaluator(cfg.match)
        ev = Evaluator(ev.dataset, ev.source, match=cfg.match, profile=get_profile(cfg.compat),
                       alphas=(cfg.alpha,), thres=cfg.thres)
        scores = ev.score([cfg.layers])
        assert scores.mean()[0, 0] == float(row["pck"])  # exactly: written with repr
        assert scores.pooled()[0, 0] == pytest.approx(float(row["pooled_pck"]))


def test_export_command_top_all_and_stdout(searched, tmp_path, capsys):
    from scotsearch.commands import export

    url, out = searched
    p = argparse.ArgumentParser()
    export.add_arguments(p)
    assert export.run(p.parse_args(["--study", "b", "--storage", url])) == 0
    rows = read_csv(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["layers"] == out.result.best.key
    assert export.run(p.parse_args(["--study", "b", "--storage", url, "--top", "2"])) == 0
    assert len(read_csv(capsys.readouterr().out)) == 2
    dest = tmp_path / "sub" / "all.csv"
    args = p.parse_args(["--study", "b", "--storage", url, "--all", "-o", str(dest)])
    assert export.run(args) == 0
    assert len(read_csv(dest.read_text())) == len(out.result.candidates)
    with pytest.raises(SystemExit):
        p.parse_args(["--study", "b", "--all", "--top", "2"])
    with pytest.raises(ScotsearchError, match="no study named 'nope'"):
        export.run(p.parse_args(["--study", "nope", "--storage", url]))


def test_tune_like_study_exports_generically(tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    study = st.open_study("t", url)
    st.check_identity(study, {"kind": "tune", "dataset": "pfpascal", "split": "val",
                              "backbone": "resnet101", "weights": "IMAGENET1K_V1",
                              "weights_digest": "abc", "compat": "scot", "alpha": 0.1,
                              "thres": "img"})
    for eps, v in ((0.05, 80.0), (0.1, 82.5)):
        m = MatchConfig(eps=eps, exp2=0.5).to_dict()
        attrs = {"search": "tune", "layers": "2,22,24", "match": m, "pck": v}
        st.add_layer_trial(study, layers=(2, 22, 24), n_layers=34, value=v, user_attrs=attrs)
    rows = export_rows(study)
    assert [r["eps"] for r in rows] == [0.1, 0.05]
    assert rows[0]["depth"] == "" and "pooled_pck" not in rows[0]
    cfg = RunConfig.from_row({k: str(v) for k, v in rows[0].items()})
    assert cfg.layers == (2, 22, 24) and cfg.match.eps == 0.1 and cfg.thres == "img"


def test_study_without_identity_is_refused():
    study = optuna.create_study(direction="maximize", study_name="foreign")
    with pytest.raises(ScotsearchError, match="no scotsearch identity"):
        export_rows(study)


def test_cli_studies_and_export(searched, capsys, monkeypatch):
    from scotsearch import cli

    # Only this module's commands: the others may be written separately.
    mine = {"beam": "beam", "studies": "studies", "export": "export"}
    monkeypatch.setattr(cli, "COMMANDS", mine)
    url, out = searched
    assert cli.main(["studies", "--storage", url]) == 0
    assert "b" in capsys.readouterr().out
    assert cli.main(["export", "--study", "b", "--storage", url, "--format", "csv"]) == 0
    assert read_csv(capsys.readouterr().out)[0]["layers"] == out.result.best.key
    assert cli.main(["export", "--study", "zz", "--storage", url]) == 2
    assert "no study named 'zz'" in capsys.readouterr().err


def test_exported_csv_through_evaluate_command(searched, tmp_path, monkeypatch, capsys):
    """beam study -> `export` -> `evaluate --config` (synthetic data in place of a benchmark)."""
    pytest.importorskip("scotsearch.commands.evaluate")
    import json

    from scotsearch import cli
    from scotsearch.commands import common

    url, out = searched
    ev = make_evaluator(MatchConfig())
    monkeypatch.setattr(cli, "COMMANDS", {"export": "export", "evaluate": "evaluate"})
    seen: list[tuple[str, int | None]] = []

    def open_dataset(args):
        seen.append((args.split, args.image_side))
        return ev.dataset

    monkeypatch.setattr(common, "open_dataset", open_dataset)
    monkeypatch.setattr(common, "feature_source", lambda args, device: ev.source)
    csv_path, json_path = tmp_path / "best.csv", tmp_path / "eval.json"
    assert cli.main(["export", "--study", "b", "--storage", url, "--top", "3",
                     "-o", str(csv_path)]) == 0
    rows = read_csv(csv_path.read_text())
    for k, row in enumerate(rows):
        # no --split / --image-side: the row's own split and image side are used
        argv = ["-q", "evaluate", "--config", str(csv_path), "--row", str(k),
                "--output", str(json_path)]
        assert cli.main(argv) == 0, capsys.readouterr().err
        assert seen[-1] == (row["split"], int(row["image_side"]))
        result = json.loads(json_path.read_text())
        assert result["layers"] == [int(v) for v in row["layers"].split(",")]
        per_pair = [p["pck"][0] for p in result["pairs"]]
        assert sum(per_pair) / len(per_pair) * 100 == pytest.approx(float(row["pck"]), abs=1e-9)
