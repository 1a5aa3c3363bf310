"""Figures of an evaluation: keypoint transfer, TPS warp, the PCK curve (matplotlib, Agg).

Every figure is drawn on its own :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no display, no global state) and saved at a fixed pixel size (the ``*_SIZE``
constants), so pages and tests know what they get.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from scotsearch.tps import warp_image


#: ``(width, height)`` in pixels of each figure kind.
TRANSFER_SIZE = (960, 420)
WARP_SIZE = (960, 360)
CURVE_SIZE = (640, 400)
DPI = 100

CORRECT = "#1a9850"
WRONG = "#d73027"


def figure(size: tuple[int, int]) -> Figure:
    """A figure of ``size`` pixels (width, height) on its own Agg canvas."""
    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a 256-colour PNG at its pixel size: a third of the bytes of a
    full-colour one for photographs, so a report with many pairs (and the README's figure)
    stays small."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    buf.seek(0)
    with Image.open(buf) as im:
        rgb = im.convert("RGB")
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        path, format="PNG", optimize=True
    )


def _points(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=np.float64)


def _show(ax: Any, image: np.ndarray, title: str) -> None:
    ax.imshow(image)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def transfer_figure(
    src_image: np.ndarray, trg_image: np.ndarray, pair: dict[str, Any], path: Path,
    *, alpha_index: int = 0, alpha: float = 0.1,
) -> None:
    """Source keypoints, and on the target the truth (circles) and the predictions (crosses,
    green correct, red wrong at ``alpha``) joined to their truth by a line.

    Args:
        src_image, trg_image: ``[H x W x 3]`` uint8 images (original pixels).
        pair: a per-pair record of ``evaluate --output``.
        path: the PNG to write (:data:`TRANSFER_SIZE`).
        alpha_index: which alpha of the record colours the predictions.
        alpha: that alpha's value, for the title and the threshold circles.
    """
    src, trg, pred = (_points(pair[k]) for k in ("src_kps", "trg_kps", "pred_kps"))
    ok = np.asarray(pair["correct"][alpha_index], dtype=bool)
    colours = np.where(ok, CORRECT, WRONG)
    fig = figure(TRANSFER_SIZE)
    ax_s, ax_t = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.02, wspace=0.04)
    _show(ax_s, src_image, f"source ({len(src)} keypoints)")
    ax_s.scatter(src[:, 0], src[:, 1], s=36, c=colours, edgecolors="white", linewidths=1.0)
    _show(ax_t, trg_image, f"target: truth o, prediction x ({int(ok.sum())}/{len(ok)} correct)")
    radius = alpha * float(pair["threshold"])
    for k in range(len(trg)):
        ax_t.add_patch(_circle(trg[k], radius, colours[k]))
        if np.isfinite(pred[k]).all():
            ax_t.plot([pred[k, 0], trg[k, 0]], [pred[k, 1], trg[k, 1]], color=colours[k], lw=1.2)
    ax_t.scatter(trg[:, 0], trg[:, 1], s=36, facecolors="none", edgecolors=colours, linewidths=1.5)
    ax_t.scatter(pred[:, 0], pred[:, 1], s=40, marker="x", c=colours, linewidths=1.8)
    fig.suptitle(
        f"pair {pair['pair_id']} ({pair['category']}): PCK@{alpha:g} = "
        f"{100 * pair['pck'][alpha_index]:.1f}   (circle: alpha x threshold)", fontsize=10,
    )
    save_figure(fig, path)


def _circle(centre: np.ndarray, radius: float, colour: str) -> Any:
    from matplotlib.patches import Circle

    return Circle((float(centre[0]), float(centre[1])), radius, fill=False, ls="--", lw=0.8,
                  ec=colour, alpha=0.8)


def warp_figure(
    src_image: np.ndarray, trg_image: np.ndarray, pair: dict[str, Any], path: Path
) -> None:
    """The target, the source warped onto it by the thin-plate spline through the source
    keypoints and the predicted ones (SCOT supplement, Fig. 1), and the two blended.

    Args:
        src_image, trg_image: ``[H x W x 3]`` uint8 images (original pixels).
        pair: a per-pair record of ``evaluate --output``.
        path: the PNG to write (:data:`WARP_SIZE`).
    """
    src, pred = _points(pair["src_kps"]), _points(pair["pred_kps"])
    warped, inside = warp_image(src_image, src, pred, trg_image.shape[:2], fill=255)
    blend = trg_image.astype(np.float64)
    blend[inside] = 0.5 * blend[inside] + 0.5 * warped[inside]
    fig = figure(WARP_SIZE)
    axes = fig.subplots(1, 3)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.02, wspace=0.03)
    _show(axes[0], trg_image, "target")
    _show(axes[1], warped, "source, TPS-warped by the predictions")
    _show(axes[2], blend.astype(np.uint8), "blend")
    fig.suptitle(f"pair {pair['pair_id']} ({pair['category']})", fontsize=10)
    save_figure(fig, path)


def curve_figure(curve: dict[str, Any], path: Path, *, marks: Sequence[float] = ()) -> None:
    """PCK against alpha, per image and per point (:data:`CURVE_SIZE`).

    Args:
        curve: ``statistics["alpha_curve"]`` of ``evaluate --output``.
        path: the PNG to write.
        marks: alphas to mark with a vertical line (the evaluated ones).
    """
    fig = figure(CURVE_SIZE)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.13)
    ax.plot(curve["alphas"], curve["pck_per_image"], marker="o", ms=3, label="per image")
    ax.plot(curve["alphas"], curve["pck_per_point"], marker="s", ms=3, ls="--",
            label="per point")
    for a in marks:
        ax.axvline(a, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("alpha")
    ax.set_ylabel("PCK (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("PCK over alpha", fontsize=10)
    save_figure(fig, path)
