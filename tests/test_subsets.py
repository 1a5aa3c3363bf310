"""Quick per-category subsets: deterministic draws, recorded, never resumed as a full split."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import use_synthetic_features

from scotsearch import cli
from scotsearch.data.subsets import per_category
from scotsearch.errors import ConfigError
from scotsearch.testing import synthetic_dataset


def _three_categories(n: int = 30):
    ds = synthetic_dataset(n, image_hw=(32, 48), seed=1)
    cats = ("bus", "cat", "dog")
    return dataclasses.replace(ds, pairs=tuple(
        dataclasses.replace(p, category=cats[k % 3]) for k, p in enumerate(ds.pairs)))


def test_per_category_draws_n_of_each_category_in_file_order() -> None:
    ds = _three_categories(31)  # bus 11, cat 10, dog 10
    sub = per_category(ds, 4, seed=0)
    counts: dict[str, int] = {}
    for p in sub.pairs:
        counts[p.category] = counts.get(p.category, 0) + 1
    assert counts == {"bus": 4, "cat": 4, "dog": 4}
    order = [ds.pairs.index(p) for p in sub.pairs]
    assert order == sorted(order)  # file order kept
    assert sub.subset == "per-category 4, seed 0"
    # a category with fewer pairs than N keeps all of them
    assert len(per_category(ds, 50).pairs) == 31


def test_per_category_is_the_same_on_every_run_and_changes_with_the_seed() -> None:
    ds = _three_categories()
    ids = [p.pair_id for p in per_category(ds, 3, seed=0).pairs]
    assert ids == [p.pair_id for p in per_category(ds, 3, seed=0).pairs]
    assert ids != [p.pair_id for p in per_category(ds, 3, seed=1).pairs]
    # a category's draw does not depend on the other categories' pairs
    only_cat = dataclasses.replace(ds, pairs=tuple(p for p in ds.pairs if p.category == "cat"))
    assert ([p.pair_id for p in per_category(only_cat, 3).pairs]
            == [p.pair_id for p in per_category(ds, 3).pairs if p.category == "cat"])
    with pytest.raises(ConfigError, match="--per-category must be >= 1"):
        per_category(ds, 0)


def test_a_subset_study_is_never_resumed_as_a_full_one(tmp_path: Path, monkeypatch, capsys):
    import scotsearch.data as data

    monkeypatch.setattr(data, "load_dataset", lambda name, root, split: _three_categories(12))
    use_synthetic_features(monkeypatch)
    url = f"sqlite:///{tmp_path}/s.db"
    argv = ["-q", "beam", "--backbone", "resnet50", "--layers", "0-2", "--beam", "1",
            "--max-layers", "1", "--sim", "cos", "--storage", url, "--study", "quick"]
    assert cli.main(argv + ["--per-category", "2"]) == 0
    capsys.readouterr()
    assert cli.main(argv + ["--per-category", "2"]) == 0  # the same draw: resumes
    assert "(0 scored now, 3 already stored)" in capsys.readouterr().out
    assert cli.main(argv) == 2  # the whole split
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "subset: stored per-category 2, seed 0, now (none)" in err[0]
    assert cli.main(argv + ["--per-category", "2", "--subset-seed", "5"]) == 2
    assert "seed 5" in capsys.readouterr().err
    # and a full study is never continued on a subset
    full = [a if a != "quick" else "full" for a in argv]
    assert cli.main(full) == 0
    capsys.readouterr()
    assert cli.main(full + ["--per-category", "2"]) == 2
    assert "subset: stored (none), now per-category 2, seed 0" in capsys.readouterr().err

    # evaluate records the subset in its output
    out = tmp_path / "e.json"
    assert cli.main(["-q", "evaluate", "--backbone", "resnet50", "--layers", "0,1",
                     "--per-category", "1", "--output", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["dataset"]["subset"] == "per-category 1, seed 0"
    assert len(payload["pairs"]) == 3
