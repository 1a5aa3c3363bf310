"""``scotsearch report``: one self-contained HTML page for an evaluation result.

The page (``index.html``) links its PNG figures by relative name from the same folder and
uses no script, stylesheet or font from elsewhere, so the folder can be copied, mailed or
opened offline. The folder is written under a temporary name and renamed when complete: a
failure leaves the previous report or none. Only the figures asked for are drawn.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scotsearch._io import tmp_name
from scotsearch._version import __version__
from scotsearch.data.images import load_image
from scotsearch.errors import DataError
from scotsearch.errors import ScotsearchError
from scotsearch.figures import curve_figure
from scotsearch.figures import transfer_figure
from scotsearch.figures import warp_figure


log = logging.getLogger(__name__)

#: ``kind`` of an ``evaluate --output`` JSON.
EVALUATION_KIND = "scotsearch-evaluation"
#: Per-pair fields the report needs (written by ``evaluate --output`` since this version).
PAIR_FIELDS = ("pair_id", "category", "pck", "src_kps", "trg_kps", "pred_kps", "correct",
               "threshold", "src_image", "trg_image")
#: Words ``--pairs`` accepts besides pair ids.
PAIR_WORDS = ("best", "median", "worst")
INDEX = "index.html"
PAIRS_CSV = "pairs.csv"


def load_evaluation(path: Path) -> dict[str, Any]:
    """Read and check an ``evaluate --output`` JSON.

    Raises:
        DataError: the file is missing, not JSON, or not a per-pair evaluation result.
    """
    if not path.is_file():
        raise DataError(f"evaluation result {path} does not exist")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a JSON file: {exc}") from None
    if not isinstance(result, dict) or result.get("kind") != EVALUATION_KIND:
        raise DataError(
            f"{path} is not a result of 'scotsearch evaluate --output' (no \"kind\": "
            f"\"{EVALUATION_KIND}\"); make one with scotsearch evaluate --output FILE.json"
        )
    pairs = result.get("pairs")
    if not isinstance(pairs, list) or not pairs or "statistics" not in result:
        raise DataError(f"{path} holds no per-pair results")
    for p in pairs:
        missing = [f for f in PAIR_FIELDS if not isinstance(p, dict) or f not in p]
        if missing:
            raise DataError(f"{path}: a pair lacks {', '.join(missing)}")
    return result


def choose_pairs(result: dict[str, Any], spec: str, alpha_index: int = 0) -> list[tuple[str, int]]:
    """The pairs to draw: ``(label, index into result["pairs"])`` for ``--pairs``.

    ``spec`` is a comma-separated list of pair ids and the words ``best``, ``median`` and
    ``worst`` (by per-pair PCK at the first alpha; ties keep file order). Repeats are drawn
    once.

    Raises:
        ScotsearchError: a pair id that the result does not hold.
    """
    pairs = result["pairs"]
    pck = np.array([p["pck"][alpha_index] for p in pairs])
    order = np.argsort(-pck, kind="stable")
    by_id = {str(p["pair_id"]): k for k, p in enumerate(pairs)}
    chosen: list[tuple[str, int]] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "best":
            k = int(order[0])
        elif item == "worst":
            k = int(order[-1])
        elif item == "median":
            k = int(order[(len(order) - 1) // 2])
        elif item in by_id:
            k = by_id[item]
        else:
            raise ScotsearchError(
                f"--pairs: no pair {item!r} in the result (give pair ids or "
                f"{', '.join(PAIR_WORDS)})"
            )
        if k not in [c[1] for c in chosen]:
            chosen.append((item, k))
    return chosen


def check_report_folder(out: Path) -> None:
    """Refuse, before any work, a report folder that could not be written at the end."""
    if out.exists() and not out.is_dir():
        raise ScotsearchError(f"--output {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX).is_file():
        raise ScotsearchError(
            f"--output {out} is a folder that holds something else than a report; "
            "give a new or empty folder"
        )
    parent = out.parent if out.parent != Path("") else Path(".")
    folder = parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ScotsearchError(f"--output {out} cannot be written: {folder} is not writable")


def write_report(
    json_path: Path, out: Path, *, pairs: str = "best,median,worst",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Build the report of ``json_path`` in the folder ``out``; returns the page's path.

    The folder is built under a temporary name next to ``out`` and renamed over it when
    complete (an earlier report there is replaced).
    """
    check_report_folder(out)
    result = load_evaluation(json_path)
    chosen = choose_pairs(result, pairs)
    for _, k in chosen:  # every image the figures need, before anything is drawn
        for key in ("src_image", "trg_image"):
            _image_path(result["pairs"][k][key], json_path.parent)

    def build(tmp: Path) -> None:
        try:
            build_page(result, tmp, chosen, source=json_path, progress=progress)
        except (KeyError, TypeError, IndexError) as exc:  # a hand-edited or truncated file
            raise DataError(f"{json_path} is malformed: {type(exc).__name__} {exc}") from None

    publish_folder(out, build)
    return out / INDEX


def publish_folder(out: Path, build: Callable[[Path], None]) -> None:
    """Run ``build`` on a new temporary folder next to ``out``, then rename it to ``out``
    (replacing an earlier report there); on any failure remove it and re-raise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=tmp_name(out), dir=out.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = out.parent / (tmp.name + ".old")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _image_path(path_text: str, base: Path) -> Path:
    """An image of the result: as recorded, else relative to the result's folder."""
    path = Path(path_text)
    if not path.is_absolute() and not path.is_file() and (base / path).is_file():
        path = base / path
    if not path.is_file():
        raise DataError(f"image {path_text} of the result is missing (the report draws it)")
    return path


def _image(path_text: str, base: Path) -> np.ndarray:
    return load_image(_image_path(path_text, base)).permute(1, 2, 0).numpy()


def build_page(
    result: dict[str, Any], folder: Path, chosen: Sequence[tuple[str, int]], *,
    source: Path, progress: Callable[[str], None] | None = None,
) -> None:
    """Draw the figures of ``chosen`` pairs and the curve, and write the page, in ``folder``."""
    stats = result["statistics"]
    alphas = [float(a) for a in result.get("alphas", stats["protocol"]["alphas"])]
    say = progress or (lambda _msg: None)
    curve_figure(stats["alpha_curve"], folder / "alpha_curve.png", marks=alphas)
    say("alpha_curve.png")
    sections = []
    for label, k in chosen:
        pair = result["pairs"][k]
        stem = f"pair_{_safe(str(pair['pair_id']))}"
        src = _image(pair["src_image"], source.parent)
        trg = _image(pair["trg_image"], source.parent)
        transfer_figure(src, trg, pair, folder / f"{stem}_transfer.png", alpha=alphas[0])
        warp_figure(src, trg, pair, folder / f"{stem}_warp.png")
        say(f"{stem}: transfer and warp")
        sections.append(_pair_section(label, pair, stem, alphas))
    _pairs_csv(result, alphas, folder / PAIRS_CSV)
    page = _page(result, alphas, sections, source)
    (folder / INDEX).write_text(page, encoding="utf-8")


def _pairs_csv(result: dict[str, Any], alphas: list[float], path: Path) -> None:
    """Every pair's numbers as CSV, for spreadsheets (and the page's link)."""
    buf = io.StringIO()
    out = csv.writer(buf)
    out.writerow(["pair_id", "category", "n_kps", "n_unique_matches",
                  *[f"pck@{a:g}" for a in alphas], "median_distance_px", "threshold_px",
                  "src_image", "trg_image"])
    for p in result["pairs"]:
        dist = [d for d in p.get("distance", []) if d is not None]
        out.writerow([p["pair_id"], p["category"], len(p["src_kps"]),
                      p.get("n_unique_matches", ""), *p["pck"],
                      f"{np.median(dist):.4f}" if dist else "", p["threshold"],
                      p["src_image"], p["trg_image"]])
    path.write_text(buf.getvalue(), encoding="utf-8")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def esc(v: Any) -> str:
    """``v`` as HTML text."""
    return html.escape(str(v))


def pck_cells(vals: Sequence[float]) -> str:
    return "".join(f"<td>{v:.2f}</td>" for v in vals)


def html_table(head: Sequence[str], rows: Sequence[str]) -> str:
    """A table with the header cells ``head`` and ready-made ``<tr>`` rows."""
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f"<table><tr>{th}</tr>{''.join(rows)}</table>"


def _pair_section(label: str, pair: dict[str, Any], stem: str, alphas: list[float]) -> str:
    what = label if label in PAIR_WORDS else "chosen"
    dist = [d for d in pair.get("distance", []) if d is not None]
    extra = f", median distance {np.median(dist):.1f} px" if dist else ""
    return (
        f"<h3>{esc(what)}: pair {esc(pair['pair_id'])} ({esc(pair['category'])}), "
        f"PCK@{alphas[0]:g} {100 * pair['pck'][0]:.1f}{esc(extra)}</h3>"
        f"<img src=\"{stem}_transfer.png\" alt=\"keypoint transfer of pair "
        f"{esc(pair['pair_id'])}\">"
        f"<img src=\"{stem}_warp.png\" alt=\"TPS warp of pair {esc(pair['pair_id'])}\">"
    )


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1em}td,th{border:1px solid #bbb;
padding:2px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}
img{display:block;max-width:100%;margin:0.3em 0 1em}code{background:#f4f4f4}"""


def _page(result: dict[str, Any], alphas: list[float], sections: list[str], source: Path) -> str:
    stats = result["statistics"]
    heads = [f"PCK@{a:g} per image" for a in alphas] + [f"PCK@{a:g} per point" for a in alphas]
    produced = result.get("produced_by", {})
    ds = result.get("dataset", {})
    title = (f"scotsearch evaluation: {ds.get('name', '?')}/{ds.get('split', '?')}, "
             f"{produced.get('backbone', '?')}, layers "
             f"{','.join(str(v) for v in result.get('layers', []))}")
    overall = html_table(["", "pairs", "keypoints", *heads], [
        f"<tr><td>all</td><td>{stats['n_pairs']}</td><td>{stats['n_kps']}</td>"
        f"{pck_cells(stats['pck_per_image'])}{pck_cells(stats['pck_per_point'])}</tr>",
        f"<tr><td>category mean, unweighted</td><td></td><td></td>"
        f"{pck_cells(stats['category_mean']['unweighted'])}"
        f"{pck_cells([float('nan')] * len(alphas))}</tr>",
        f"<tr><td>category mean, weighted by pairs</td><td></td><td></td>"
        f"{pck_cells(stats['category_mean']['weighted_by_pairs'])}"
        f"{pck_cells([float('nan')] * len(alphas))}</tr>",
    ]).replace("<td>nan</td>", "<td></td>")
    cats = html_table(["category", "pairs", "keypoints", *heads], [
        f"<tr><td>{esc(c)}</td><td>{s['n_pairs']}</td><td>{s['n_kps']}</td>"
        f"{pck_cells(s['pck_per_image'])}{pck_cells(s['pck_per_point'])}</tr>"
        for c, s in stats["per_category"].items()
    ])
    factor_rows = [
        f"<tr><td>{esc(f.replace('_variation', ''))}: {esc(level)}</td><td>{s['n_pairs']}</td>"
        f"<td>{s['n_kps']}</td>{pck_cells(s['pck_per_image'])}{pck_cells(s['pck_per_point'])}</tr>"
        for f, levels in stats.get("per_factor", {}).items() for level, s in levels.items()
    ]
    factors = (html_table(["factor: level", "pairs", "keypoints", *heads], factor_rows)
               if factor_rows else "<p>The pairs carry no variation factors.</p>")
    curve = stats["alpha_curve"]
    curve_rows = [f"<tr><td>{a:g}</td>{pck_cells([i, p])}</tr>" for a, i, p in
                  zip(curve["alphas"], curve["pck_per_image"], curve["pck_per_point"])]
    t3 = stats["table3"]
    proto = stats["protocol"]
    match = result.get("match", {})
    settings = {
        "dataset": f"{ds.get('name')} / {ds.get('split')} ({ds.get('root')})",
        "backbone": produced.get("backbone"),
        "weights": produced.get("weights"),
        "weights digest (SHA-256)": produced.get("weights_digest"),
        "layers": ",".join(str(v) for v in result.get("layers", [])),
        "compat mode, image side": f"{result.get('compat')}, {result.get('image_side')}",
        "matching": ", ".join(f"{k}={v}" for k, v in match.items()),
        "engine, precision, device": (f"{result.get('engine')}, {result.get('precision')}, "
                                      f"{produced.get('device')}"),
        "threshold basis, alphas": f"{proto['threshold_basis']}, "
                                   f"{', '.join(f'{a:g}' for a in proto['alphas'])}",
        "scotsearch version (evaluation / report)":
            f"{result.get('scotsearch_version')} / {__version__}",
        "environment": ", ".join(f"{k} {v}" for k, v in result.get("environment", {}).items()),
        "result file": str(source),
    }
    produced_rows = [f"<tr><td>{esc(k)}</td><td style=\"text-align:left\">{esc(v)}</td></tr>"
                     for k, v in settings.items()]
    pair_rows = [
        f"<tr><td>{esc(p['pair_id'])}</td><td>{esc(p['category'])}</td><td>{len(p['src_kps'])}"
        f"</td><td>{p.get('n_unique_matches', '')}</td>"
        f"{pck_cells([100 * v for v in p['pck']])}</tr>"
        for p in sorted(result["pairs"], key=lambda p: -p["pck"][0])
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{esc(title)}</h1>
<p>PCK x 100. <b>Per image</b>: {esc(proto['pck_per_image'])} (HPF/SCOT's headline number).
<b>Per point</b>: {esc(proto['pck_per_point'])}. A keypoint is correct if
{esc(proto['correct_if'])}; threshold basis <code>{esc(proto['threshold_basis'])}</code>.</p>
<h2>Overall</h2>{overall}
<h2>Per category</h2>{cats}
<h2>Per variation factor (SPair-71k Table 2 layout)</h2>{factors}
<h2>PCK over alpha</h2><img src="alpha_curve.png" alt="PCK over alpha">
<details><summary>values</summary>
{html_table(['alpha', 'per image', 'per point'], curve_rows)}</details>
<h2>Matches (SCOT Table 3)</h2>
<p>Mean source points per pair {t3['src_points']:.2f}, mean unique target matches
{t3['unique_matches']:.2f} (predictions closer than {proto['unique_match_tolerance_px']:g}
px count once).</p>
<h2>Pairs</h2>
<p>Left: source keypoints; right: ground truth (circle), prediction (cross), green correct
and red wrong at alpha {alphas[0]:g}. Below: the source warped onto the target by a
thin-plate spline through the source keypoints and the predicted ones.</p>
{''.join(sections)}
<p>Every pair's numbers: <a href="{PAIRS_CSV}">{PAIRS_CSV}</a>.</p>
<details><summary>every pair, best first</summary>
{html_table(['pair', 'category', 'points', 'unique matches',
         *[f'PCK@{a:g}' for a in alphas]], pair_rows)}</details>
<h2>What produced this result</h2>{html_table(['', ''], produced_rows)}
</body></html>
"""
