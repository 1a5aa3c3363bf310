"""``scotsearch datasets check``: what of a benchmark is present, what is missing or broken.

Every split of the dataset is read with its real reader (so the first malformed file or
line is named exactly as any command would name it) and every image the pairs refer to is
looked for. :func:`check_images` is the image part alone, which every command that opens a
split runs, so that a missing image fails at once in one line rather than mid-search.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from scotsearch.data.pairs import Dataset
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError
from scotsearch.errors import ScotsearchError


#: The splits each benchmark defines.
SPLITS = {
    "spair": ("trn", "val", "test"),
    "pfpascal": ("trn", "val", "test"),
    "pfwillow": ("test",),
    "caltech": ("test",),
    "tss": ("test",),
    "demo": ("val", "test"),
}

#: Where each benchmark's files officially come from (reference-behaviour.md §9, §11).
SOURCES = {
    "spair": "SPair-71k.tar.gz from the SPair-71k project page (POSTECH CVLab, "
             "cvlab.postech.ac.kr/research/SPair-71k)",
    "pfpascal": "PF-dataset-PASCAL from the Proposal Flow project page "
                "(www.di.ens.fr/willow/research/proposalflow); its archive has no "
                "{trn,val,test}_pairs.csv: those come with HPF's Datasets_HPF PF-PASCAL "
                "archive (Google Drive id 1OOwpGzJnTsFXYh-YffMQ9XKM_Kl_zdzg) or, test only, "
                "NCNet's datasets/pf-pascal/image_pairs",
    "pfwillow": "PF-dataset (PF-WILLOW) from the Proposal Flow project page "
                "(www.di.ens.fr/willow/research/proposalflow), test_pairs.csv with HPF's "
                "Datasets_HPF PF-WILLOW archive (Google Drive id "
                "1tDP0y8RO5s45L-vqnortRaieiWENQco_)",
    "caltech": "HPF's Datasets_HPF Caltech-101 archive (Google Drive id "
               "1IV0E5sJ6xSdDyIvVSTdZjPHELMwGzsMn): 101_ObjectCategories/ with "
               "test_pairs_caltech_with_category.csv; the images alone are Caltech's "
               "101_ObjectCategories (data.caltech.edu, doi 10.22002/D1.20086)",
    "tss": "the TSS dataset (TSS_CVPR2016) downloaded by hand from its project page "
           "(taniai.space/projects/cvpr16_dccs), with SCOT's test_pairs_tss.csv in the TSS "
           "folder; nothing is downloaded automatically",
    "demo": "written by scotsearch itself on first use (delete the folder to rebuild it)",
}


@dataclass
class SplitReport:
    """One split: what was read, or the first problem that stopped the reader."""

    split: str
    pairs: int = 0
    per_category: dict[str, int] = field(default_factory=dict)
    images: int = 0
    missing_images: list[Path] = field(default_factory=list)
    error: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and not self.missing_images and self.pairs > 0


@dataclass
class DatasetReport:
    name: str
    root: Path | None
    splits: list[SplitReport]

    @property
    def usable(self) -> bool:
        return all(s.usable for s in self.splits)

    def problems(self, limit: int = 5) -> list[str]:
        """The first ``limit`` problems, each one line naming the file."""
        out: list[str] = []
        for s in self.splits:
            if s.error is not None:
                out.append(f"{s.split}: {s.error}")
            for path in s.missing_images[:limit]:
                out.append(f"{s.split}: image not found: {path}")
            if len(s.missing_images) > limit:
                out.append(f"{s.split}: ... and {len(s.missing_images) - limit} more missing "
                           "images")
        return out[:limit]


def missing_images(dataset: Dataset) -> tuple[int, list[Path]]:
    """``(distinct images, the missing ones in first-use order)`` of a split's pairs."""
    seen: dict[Path, None] = {}
    for p in dataset.pairs:
        seen.setdefault(Path(p.src_path))
        seen.setdefault(Path(p.trg_path))
    return len(seen), [path for path in seen if not path.is_file()]


def check_images(dataset: Dataset) -> None:
    """Raise :class:`~scotsearch.errors.DataError` naming the first missing image, if any."""
    n, missing = missing_images(dataset)
    if missing:
        more = f" (and {len(missing) - 1} more of {n} images)" if len(missing) > 1 else ""
        raise DataError(f"image not found: {missing[0]}{more}")


def check_dataset(name: str, root: Path | None, splits: tuple[str, ...] | None = None
                  ) -> DatasetReport:
    """Read every split of ``name`` at ``root`` (or ``splits``) and look for every image.

    Raises:
        ConfigError: an unknown dataset or split name (nothing to check).
    """
    from scotsearch.data import load_dataset

    if name not in SPLITS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(SPLITS)}")
    wanted = splits or SPLITS[name]
    for s in wanted:
        if s not in SPLITS[name]:
            raise ConfigError(f"dataset {name!r} has no split {s!r}; it has "
                              f"{', '.join(SPLITS[name])}")
    reports = []
    for split in wanted:
        rep = SplitReport(split)
        try:
            ds = load_dataset(name, root, split)
        except ScotsearchError as exc:
            rep.error = " ".join(str(exc).split())
        else:
            rep.pairs = len(ds.pairs)
            for p in ds.pairs:
                rep.per_category[p.category] = rep.per_category.get(p.category, 0) + 1
            rep.images, rep.missing_images = missing_images(ds)
        reports.append(rep)
    return DatasetReport(name, root, reports)


def format_report(report: DatasetReport) -> str:
    """The report as text: a line per split, the categories, the first problems, the source."""
    lines = [f"dataset {report.name} at {report.root}"]
    for s in report.splits:
        if s.error is not None:
            lines.append(f"  {s.split:5s} NOT READABLE")
            continue
        state = "ok" if s.usable else f"{len(s.missing_images)} of {s.images} images missing"
        lines.append(f"  {s.split:5s} {s.pairs:7,d} pairs  {s.images:6,d} images  "
                     f"{len(s.per_category):3d} categories  {state}")
        cats = ", ".join(f"{c} {k}" for c, k in sorted(s.per_category.items()))
        lines.append(f"        {cats}")
    problems = report.problems()
    if problems:
        lines.append("problems (first few):")
        lines.extend(f"  {p}" for p in problems)
        lines.append(f"where the files come from: {SOURCES[report.name]}")
    lines.append("usable" if report.usable else "NOT usable")
    return "\n".join(lines)
