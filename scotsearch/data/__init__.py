"""Benchmark readers: every dataset becomes a :class:`Dataset` of :class:`Pair` records.

Use :func:`load_dataset` to pick a reader by name; images are decoded separately with
:func:`load_image` when they are needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scotsearch.data.caltech import read_caltech
from scotsearch.data.images import image_size
from scotsearch.data.images import load_image
from scotsearch.data.pairs import THRESHOLD_KINDS
from scotsearch.data.pairs import VARIATION_FACTORS
from scotsearch.data.pairs import Dataset
from scotsearch.data.pairs import Pair
from scotsearch.data.pairs import check_keypoints_inside
from scotsearch.data.pairs import check_pair
from scotsearch.data.pairs import threshold_base
from scotsearch.data.pfpascal import read_pfpascal
from scotsearch.data.pfwillow import read_pfwillow
from scotsearch.data.spair import read_spair
from scotsearch.data.tss import read_tss
from scotsearch.errors import ConfigError


#: Reader and conventional folder name of each real benchmark. HPF/SCOT users pass the
#: parent folder (``Datasets_HPF``); the folder name lets us accept either.
_READERS: dict[str, tuple[Callable[[Path, str], Dataset], str]] = {
    "spair": (read_spair, "SPair-71k"),
    "pfpascal": (read_pfpascal, "PF-PASCAL"),
    "pfwillow": (read_pfwillow, "PF-WILLOW"),
    "caltech": (read_caltech, "Caltech-101"),
    "tss": (read_tss, "TSS"),
}

#: Every name :func:`load_dataset` accepts.
DATASETS = (*_READERS, "demo")

#: Where the synthetic demo dataset is generated when no root is given.
DEFAULT_DEMO_ROOT = Path("cache") / "demo-data"


def load_dataset(name: str, root: Path | None, split: str) -> Dataset:
    """Read a benchmark split by name.

    Args:
        name: ``spair``, ``pfpascal``, ``pfwillow``, ``tss``, ``caltech`` or ``demo``.
        root: the dataset folder (e.g. ``.../SPair-71k``) or its parent holding the
            conventionally named folder. For ``demo``, where to generate the data
            (default ``cache/demo-data``). Real datasets are never downloaded.
        split: ``trn`` (alias ``train``), ``val`` or ``test``.

    Raises:
        ConfigError: unknown dataset name, or no root given for a real dataset.
        DataError: the files are missing or malformed.
    """
    if name == "demo":
        # --- demo hook -------------------------------------------------------------------
        # The generator lives in scotsearch/data/demo/ (another package); import it only
        # when asked for, so the real readers never depend on it. It writes SPair-71k
        # layout and returns that root.
        from scotsearch.data.demo import ensure_demo

        demo_root = ensure_demo(Path(root) if root is not None else DEFAULT_DEMO_ROOT)
        return read_spair(demo_root, split, name="demo")
    if name not in _READERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    reader, folder = _READERS[name]
    if root is None:
        raise ConfigError(
            f"dataset {name!r} needs its root folder (e.g. .../{folder}); scotsearch does not "
            "download datasets"
        )
    root = Path(root)
    # Accept the HPF/SCOT parent folder too, unless root already is the dataset folder.
    if root.name != folder and (root / folder).is_dir():
        root = root / folder
    return reader(root, split)


__all__ = [
    "DATASETS",
    "DEFAULT_DEMO_ROOT",
    "THRESHOLD_KINDS",
    "VARIATION_FACTORS",
    "Dataset",
    "Pair",
    "check_keypoints_inside",
    "check_pair",
    "image_size",
    "load_dataset",
    "load_image",
    "read_caltech",
    "read_pfpascal",
    "read_pfwillow",
    "read_spair",
    "read_tss",
    "threshold_base",
]
