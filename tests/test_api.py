"""The public Python API: the curated names, a cheap import, and the README's example."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import scotsearch
from scotsearch.data.pairs import Dataset


README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("\n## Python API\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one example"
    return blocks[0]


def test_every_exported_name_exists() -> None:
    assert len(set(scotsearch.__all__)) == len(scotsearch.__all__)
    assert [n for n in scotsearch.__all__ if not hasattr(scotsearch, n)] == []
    assert scotsearch.__version__


def test_rhm_is_the_module_not_its_function() -> None:
    # binding the function in __init__ would hide the submodule of the same name
    import scotsearch.rhm as rhm_module

    assert scotsearch.rhm is rhm_module and callable(rhm_module.rhm)


def test_the_example_uses_only_exported_names() -> None:
    used = set(re.findall(r"\bss\.(\w+)", _readme_example()))
    assert used and used <= set(scotsearch.__all__)


def test_import_is_cheap_and_names_load_on_use() -> None:
    # the CLI imports the package for every command; torch, torchvision and Optuna wait
    # until a name that needs them is used
    heavy = ("torch", "torchvision", "optuna", "pandas", "sqlalchemy")
    code = (f"import sys, scotsearch; heavy = {heavy!r}; "
            "print(sorted(m for m in heavy if m in sys.modules)); "
            "scotsearch.resolve_match; print(sorted(m for m in heavy if m in sys.modules)); "
            "scotsearch.Evaluator; print('torch' in sys.modules, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split("\n")[:3] == ["[]", "[]", "True False"]


def test_lazy_names_are_the_type_checking_imports() -> None:
    # mypy reads the TYPE_CHECKING imports, the runtime reads _EXPORTS: one list, twice
    source = Path(scotsearch.__file__).read_text(encoding="utf-8")
    block = source.split("if TYPE_CHECKING:\n", 1)[1].split("\n\n", 1)[0]
    typed = {}
    for module, name in re.findall(r"^    from (\S+) import (\w+)$", block, flags=re.M):
        typed[name] = f"{module}.{name}" if module == "scotsearch" else module
    assert typed == scotsearch._EXPORTS
    assert sorted(scotsearch._EXPORTS) == sorted(set(scotsearch.__all__) - {"__version__"})
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        scotsearch.nothing  # noqa: B018


@pytest.mark.slow
def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    real = scotsearch.load_dataset

    def two_pairs(name: str, root: Path | None, split: str) -> Dataset:
        # the example as written, on two pairs of the split so that it runs in seconds
        ds = real(name, root, split)
        return dataclasses.replace(ds, pairs=ds.pairs[:2])

    monkeypatch.setattr(scotsearch, "load_dataset", two_pairs)
    exec(compile(_readme_example(), "README.md (Python API)", "exec"), {"__name__": "readme"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    pcks = [float(v) for v in lines[0].strip("[]").split()]
    assert len(pcks) == 2 and all(0.0 <= v <= 100.0 for v in pcks)
    key, best = lines[1].split()
    assert 1 <= len(key.split(",")) <= 2 and 0.0 <= float(best) <= 100.0
    # the evaluator read its features through the on-disk cache
    assert list((tmp_path / "cache" / "features").rglob("*.safetensors"))
