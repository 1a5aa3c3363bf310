"""``scotsearch report --study``: an HTML page for a beam or tune study.

A beam study gets PCK per depth with every scored and pruned candidate, the best subset per
depth and the lineage of the best candidate (its parents up to depth 1); a tune study gets
Optuna's optimisation history, parameter importances and slices
(``optuna.visualization.matplotlib``) over its finished, unpruned trials. Both get the
study's identity (what produced it) and the best candidates. A figure is drawn once per
study whatever its size, so a study of thousands of candidates reports in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from scotsearch._version import __version__
from scotsearch.errors import ScotsearchError
from scotsearch.figures import figure
from scotsearch.figures import save_figure
from scotsearch.report_page import INDEX
from scotsearch.report_page import STYLE
from scotsearch.report_page import check_report_folder
from scotsearch.report_page import esc
from scotsearch.report_page import html_table
from scotsearch.report_page import publish_folder
from scotsearch.study import completed_trials


#: ``(width, height)`` of the beam figure and of each tuning figure.
BEAM_SIZE = (900, 500)
TUNE_SIZE = (800, 450)
#: Rows of the best-candidates table.
TOP = 15


def study_kind(study: optuna.Study) -> str:
    """``beam`` or ``tune`` (the ``search`` attribute of its trials).

    Raises:
        ScotsearchError: the study holds no finished scotsearch trial.
    """
    kinds = {t.user_attrs.get("search") for t in completed_trials(study)}
    for kind in ("beam", "tune"):
        if kind in kinds:
            return kind
    raise ScotsearchError(
        f"study '{study.study_name}' holds no finished beam or tune candidate to report"
    )


def _pck(t: FrozenTrial) -> float:
    v = t.user_attrs.get("pck", t.value)
    return float("nan") if v is None else float(v)


def _finished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if not t.user_attrs.get("pruned") and math.isfinite(_pck(t))]


def write_study_report(
    study: optuna.Study, out: Path, *, progress: Callable[[str], None] | None = None
) -> Path:
    """Build the report of a beam or tune study in the folder ``out``; returns the page."""
    check_report_folder(out)
    kind = study_kind(study)
    trials = completed_trials(study, search=kind)
    if not _finished(trials):
        raise ScotsearchError(f"study '{study.study_name}' has no unpruned candidate yet")
    say = progress or (lambda _msg: None)

    def build(folder: Path) -> None:
        if kind == "beam":
            body = _beam(trials, folder)
        else:
            body = _tune(study, trials, folder)
        say(f"{kind} figures")
        (folder / INDEX).write_text(_page(study, kind, body, trials), encoding="utf-8")

    publish_folder(out, build)
    return out / INDEX


def _lineage(best: FrozenTrial, by_layers: dict[str, FrozenTrial]) -> list[FrozenTrial]:
    chain = [best]
    while chain[-1].user_attrs.get("parent") and len(chain) < 64:
        parent = by_layers.get(str(chain[-1].user_attrs["parent"]))
        if parent is None:
            break
        chain.append(parent)
    return chain[::-1]


def _beam(trials: list[FrozenTrial], folder: Path) -> str:
    done = _finished(trials)
    pruned = [t for t in trials if t.user_attrs.get("pruned")]
    by_layers = {str(t.user_attrs["layers"]): t for t in done}
    depths = sorted({int(t.user_attrs.get("depth", 0)) for t in trials})
    best_per_depth = {
        d: max((t for t in done if int(t.user_attrs.get("depth", 0)) == d), key=_pck,
               default=None)
        for d in depths
    }
    best = max(done, key=_pck)
    chain = _lineage(best, by_layers)

    fig = figure(BEAM_SIZE)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.1)
    jitter = [((t.number * 0.6180339) % 1 - 0.5) * 0.3 for t in done]
    ax.scatter([int(t.user_attrs.get("depth", 0)) + j for t, j in zip(done, jitter)],
               [_pck(t) for t in done], s=10, alpha=0.5, label="scored candidate")
    if pruned:
        ax.scatter([int(t.user_attrs.get("depth", 0)) for t in pruned],
                   [float(t.user_attrs.get("pck_partial", t.value or 0)) for t in pruned],
                   s=14, marker="x", c="grey", label="raced out (partial mean)")
    bd = [(d, _pck(t)) for d, t in best_per_depth.items() if t is not None]
    ax.plot([d for d, _ in bd], [v for _, v in bd], c="#ff7f0e", lw=1.2, label="best per depth")
    ax.plot([int(t.user_attrs.get("depth", 0)) for t in chain], [_pck(t) for t in chain],
            c="#d62728", marker="o", lw=2, label="lineage of the best")
    for t in chain:
        ax.annotate(str(t.user_attrs["layers"]), (int(t.user_attrs.get("depth", 0)), _pck(t)),
                    textcoords="offset points", xytext=(4, 6), fontsize=7, color="#d62728")
    ax.set_xlabel("depth (0: single layers; a subset at depth d has d + 1 layers)")
    ax.set_ylabel("PCK (%)")
    ax.set_xticks(depths)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"beam search: {len(done)} candidates scored, {len(pruned)} raced out",
                 fontsize=10)
    save_figure(fig, folder / "beam_depths.png")

    depth_rows = []
    for d in depths:
        at = [t for t in trials if int(t.user_attrs.get("depth", 0)) == d]
        b = best_per_depth[d]
        depth_rows.append(
            f"<tr><td>{d}</td><td>{len(at)}</td>"
            f"<td>{sum(1 for t in at if t.user_attrs.get('pruned'))}</td>"
            f"<td>{'' if b is None else esc(b.user_attrs['layers'])}</td>"
            f"<td>{'' if b is None else f'{_pck(b):.2f}'}</td></tr>"
        )
    lineage = " &rarr; ".join(f"{esc(t.user_attrs['layers'])} ({_pck(t):.2f})" for t in chain)
    return (
        '<h2>PCK per depth</h2><img src="beam_depths.png" alt="beam search PCK per depth">'
        f"<p>Lineage of the best: {lineage}</p>"
        + html_table(["depth", "candidates", "raced out", "best subset", "its PCK"],
                     depth_rows)
    )


def _tune(study: optuna.Study, trials: list[FrozenTrial], folder: Path) -> str:
    from optuna.visualization import matplotlib as ovm

    done = _finished(trials)
    # Finished, unpruned trials only, valued by their PCK: a pruned trial's partial mean is
    # no result, and a copy keeps the stored study untouched.
    view = optuna.create_study(direction="maximize", study_name=study.study_name)
    view.add_trials([
        optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                  value=_pck(t), user_attrs=t.user_attrs)
        for t in done
    ])
    parts = ['<h2>Tuning</h2>']
    plots: list[tuple[str, str, Callable[[], Any]]] = [
        ("history.png", "optimisation history", lambda: ovm.plot_optimization_history(view)),
        ("slices.png", "slices", lambda: ovm.plot_slice(view)),
    ]
    if len(done) >= 2 and any(len(t.distributions) for t in done):
        plots.insert(1, ("importances.png", "parameter importances",
                         lambda: ovm.plot_param_importances(view)))
    for name, what, plot in plots:
        try:
            axes = plot()
        except (ValueError, RuntimeError) as exc:  # e.g. one trial, or constant parameters
            parts.append(f"<p>No {esc(what)}: {esc(exc)}</p>")
            continue
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        fig = first.figure
        assert isinstance(fig, Figure)
        fig.set_size_inches(TUNE_SIZE[0] / 100, TUNE_SIZE[1] / 100)
        fig.set_dpi(100)
        if name != "slices.png":  # the slice plot's colour bar defeats tight_layout
            fig.tight_layout()
        save_figure(fig, folder / name)
        _close(fig)
        parts.append(f'<h3>{esc(what)}</h3><img src="{name}" alt="{esc(what)}">')
    return "".join(parts)


def _close(fig: Figure) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _page(study: optuna.Study, kind: str, body: str, trials: list[FrozenTrial]) -> str:
    done = sorted(_finished(trials), key=lambda t: (-_pck(t), t.number))
    params = sorted({p for t in done[:TOP] for p in t.params}) if kind == "tune" else []
    rows = [
        f"<tr><td>{t.number}</td><td>{esc(t.user_attrs.get('layers', ''))}</td>"
        f"<td>{_pck(t):.2f}</td>"
        + "".join(f"<td>{esc(_fmt(t.params.get(p, '')))}</td>" for p in params)
        + "</tr>"
        for t in done[:TOP]
    ]
    attrs = study.user_attrs
    ident = attrs.get("identity") or {}
    produced = [f"<tr><td>{esc(k)}</td><td style=\"text-align:left\">{esc(_fmt(v))}</td></tr>"
                for k, v in {**ident, "environment": attrs.get("environment", ""),
                             "report made by scotsearch": __version__}.items()]
    title = f"scotsearch {kind} study '{study.study_name}'"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(title)}</h1>
<p>{len(trials)} finished trials, {len(done)} with a full PCK (x 100, mean over pairs).</p>
{body}
<h2>Best {min(TOP, len(done))}</h2>
{html_table(['trial', 'layers', 'PCK', *params], rows)}
<h2>What produced this study</h2>{html_table(['', ''], produced)}
</body></html>
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)
