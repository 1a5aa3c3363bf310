"""Which trial each caller calls "the best", ties and stopped trials included.

Pinned before the callers were moved onto one rule, so that the move keeps what a user sees:

* ``scotsearch studies`` (and the export order): highest value, then fewer layers, then the
  earlier trial; trials stopped early (``pruned``) never count.
* ``scotsearch tune --from-beam``: highest value, then the earlier trial; stopped trials never
  count.
* the ``scotsearch tune`` summary (``TuneResult.best``): what Optuna's ``study.best_trial``
  gives on a study filled in trial order: highest value, then the earlier trial, and a trial
  the Wilcoxon pruner stopped (COMPLETE, value = its running mean) does count.
* ``scotsearch beam``: the search's own best, which on a beam study is the study's best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import BaseStorage

from scotsearch import study as st
from scotsearch.config import MatchConfig
from scotsearch.evaluate import Evaluator
from scotsearch.export import export_rows
from scotsearch.presets import get_profile
from scotsearch.search.tune import run_tune
from scotsearch.study import best_layers_of
from scotsearch.testing import SyntheticSource
from scotsearch.testing import synthetic_dataset


#: (layers, value, stopped early): trial 1 and trial 2 tie, trial 2 has fewer layers.
TIED = [((1, 2, 3), 50.0, False), ((1, 2), 60.0, False), ((1,), 60.0, False)]
#: The same, plus a stopped trial whose running mean is above every full score.
STOPPED_ON_TOP = [*TIED, ((2,), 65.0, True)]

IDENTITY = {"kind": "tune", "dataset": "synthetic", "split": "val", "backbone": "resnet50",
            "alpha": 0.05, "thres": "bbox"}


def _fill(study: optuna.Study, rows: list[tuple[tuple[int, ...], float, bool]]) -> None:
    match = MatchConfig.from_variant("ot-rhm-stair").to_dict()
    for layers, value, stopped in rows:
        attrs: dict[str, Any] = {"search": "tune", "layers": ",".join(map(str, layers)),
                                 "match": match, "pruned": stopped}
        attrs["pck"] = float("nan") if stopped else value
        st.add_layer_trial(study, layers=layers, n_layers=17, value=value, user_attrs=attrs)


def _storages(tmp_path: Path) -> dict[str, BaseStorage]:
    return {
        "memory": optuna.storages.InMemoryStorage(),
        "sqlite": st.open_storage(f"sqlite:///{tmp_path}/s.db"),
        "journal": st.open_storage(f"journal:{tmp_path}/j.log"),
    }


def _tune_evaluator() -> Evaluator:
    return Evaluator(
        synthetic_dataset(2, seed=1), SyntheticSource(informative=(0, 2, 5), noise_scale=1.0),
        match=MatchConfig.from_variant("ot-rhm-stair"), profile=get_profile("scot"),
        alphas=(0.05,),
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_each_caller_keeps_its_best(tmp_path: Path, kind: str) -> None:
    storage = _storages(tmp_path)[kind]
    for name, rows in (("tied", TIED), ("stopped", STOPPED_ON_TOP)):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr("identity", IDENTITY)
        _fill(study, rows)

    # `scotsearch studies`: fewer layers wins the tie, the stopped trial never counts
    listed = {r["study"]: r for r in st.list_studies(storage)}
    assert (listed["tied"]["best"], listed["tied"]["layers"]) == (60.0, "1")
    assert (listed["stopped"]["best"], listed["stopped"]["layers"]) == (60.0, "1")
    for name in ("tied", "stopped"):
        study = optuna.load_study(study_name=name, storage=storage)
        assert st.best_trial(study).number == 2
        # the export lists the same order, best first
        assert [r["trial"] for r in export_rows(study)] == [2, 1, 0]
        # --from-beam: the earlier trial wins the tie, the stopped trial never counts
        assert best_layers_of(study) == (1, 2)

    # the tune summary: the earlier trial wins the tie, and the stopped trial counts
    for name, number in (("tied", 1), ("stopped", 3)):
        study = optuna.load_study(study_name=name, storage=storage)
        study.set_user_attr("identity", None)  # run_tune stores its own
        res = run_tune(_tune_evaluator(), study_name=name, n_trials=len(study.trials),
                       storage=storage, layers=(1, 2), pruner="none")
        assert res.n_run == 0
        assert res.best is not None and res.best.number == number


def test_the_beam_result_is_the_study_best(tmp_path: Path) -> None:
    from scotsearch.search.beam_study import run_beam

    ds = synthetic_dataset(2, image_hw=(32, 48), n_kps=5, seed=1)
    src = SyntheticSource("resnet50", informative=(1, 3), image_hw=(32, 48))
    ev = Evaluator(ds, src, match=MatchConfig(similarity="cos", rhm=False),
                   profile=get_profile("scot"))
    url = f"sqlite:///{tmp_path}/b.db"
    out = run_beam(ev, study="b", storage=url, beam=2, max_layers=3, layers=range(5), chunk=3)
    values = [c.score for c in out.result.candidates]
    assert len(values) > len(set(values)), "the small search should contain ties"
    best = st.best_trial(out.study)
    assert best is not None
    assert (best.user_attrs["layers"], best.value) == (out.result.best.key, out.best_pck)
    assert best_layers_of(out.study) == out.best_layers
    assert st.list_studies(url)[0]["layers"] == out.result.best.key
