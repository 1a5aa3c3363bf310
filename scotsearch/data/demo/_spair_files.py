"""Demo files: write the whole tree in SPair-71k layout, with the manifest last.

The JSON files mirror SPair-71k's field names and types; the manifest records the
generator, version, seed, every file's size and each pair's warp parameters (see the
package docstring for the layout).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from scotsearch.data.demo._photos import _KPS_PER_PAIR
from scotsearch.data.demo._photos import _PHOTOS
from scotsearch.data.demo._photos import DEMO_CATEGORIES
from scotsearch.data.demo._photos import _load_photo
from scotsearch.data.demo._photos import _Photo
from scotsearch.data.demo._render import _photometric
from scotsearch.data.demo._render import _render
from scotsearch.data.demo._views import _level_plan
from scotsearch.data.demo._views import _source_view
from scotsearch.data.demo._views import _target_view
from scotsearch.data.demo._views import _view_box
from scotsearch.data.demo._views import _view_points
from scotsearch.data.demo._warps import _View


#: Bump whenever the generated content changes; an older tree is regenerated.
DEMO_VERSION = 1

#: Splits written, in order.
DEMO_SPLITS = ("val", "test")

#: Pairs per category in each split.
PAIRS_PER_CATEGORY = 4

#: The file whose presence (written last) marks a complete tree.
MANIFEST_NAME = "demo_manifest.json"

# Recorded in the manifest and compared on reuse: a name, not a module path (it predates
# the package), so it stays as it is; changing it would regenerate every existing tree.
_GENERATOR = "scotsearch.data.demo"
_JPEG_QUALITY = 90


def _dumps(obj: Any) -> str:
    # SPair's files are single-line json.dumps output without a trailing newline.
    return json.dumps(obj)


def _image_annotation(view: _View, photo: _Photo) -> dict[str, Any]:
    pts, vis = _view_points(view, photo)
    w, h = view.wh
    return {
        "filename": f"{view.name}.jpg",
        "src_database": "scikit-image sample data",
        "src_annotation": "scotsearch demo generator",
        "src_image": photo.spec.right_file if view.right else photo.spec.file,
        "image_width": w,
        "image_height": h,
        "image_depth": 3,
        "category": photo.spec.category,
        "pose": "Unspecified",
        "truncated": 0,
        "occluded": 0,
        "difficult": 0,
        "bndbox": _view_box(view, photo),
        "kps": {
            str(i): [int(pts[i, 0]), int(pts[i, 1])] if vis[i] else None for i in range(len(pts))
        },
        "azimuth_id": 0,
    }


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode="RGB").save(path, format="JPEG", quality=_JPEG_QUALITY)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def _write_dataset(spair: Path, seed: int) -> None:
    """Write the whole demo tree into ``spair`` (not atomic; see :func:`ensure_demo`).

    Every random draw comes from a generator seeded by ``seed`` and the position of what
    it draws for (category, split), so the output does not depend on evaluation order.
    """
    photos = [
        _load_photo(spec, np.random.default_rng([seed, ci, 1000]))
        for ci, spec in enumerate(_PHOTOS)
    ]
    warps: dict[str, dict[str, Any]] = {}
    for si, split in enumerate(DEMO_SPLITS):
        n_pairs = len(photos) * PAIRS_PER_CATEGORY
        plan = _level_plan(np.random.default_rng([seed, 2000 + si]), n_pairs)
        lines: list[str] = []
        warps[split] = {}
        for ci, photo in enumerate(photos):
            levels = plan[ci * PAIRS_PER_CATEGORY : (ci + 1) * PAIRS_PER_CATEGORY]
            rng = np.random.default_rng([seed, ci, si])
            for line, warp in _write_category(spair, photo, split, levels, len(lines), rng):
                lines.append(line)
                warps[split][line] = warp
        # SPair's split files end with a newline (its readers drop the empty last line).
        layout = "".join(f"{line}\n" for line in lines)
        _write_text(spair / "Layout" / "large" / f"{split}.txt", layout)

    files = {
        p.relative_to(spair).as_posix(): p.stat().st_size
        for p in sorted(spair.rglob("*"))
        if p.is_file()
    }
    manifest = {
        "generator": _GENERATOR,
        "version": DEMO_VERSION,
        "seed": seed,
        "categories": list(DEMO_CATEGORIES),
        "pairs": {split: len(warps[split]) for split in DEMO_SPLITS},
        "warps": warps,
        "files": files,
    }
    # Written last: its presence is what marks the tree complete.
    _write_text(spair / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))


def _write_category(
    spair: Path,
    photo: _Photo,
    split: str,
    levels: list[tuple[int, int]],
    first_index: int,
    rng: np.random.Generator,
) -> list[tuple[str, dict[str, Any]]]:
    """Write one category's source image and its pairs for one split.

    Args:
        levels: (viewpoint, scale) level of each pair.
        first_index: pairs already written in this split (pair ids continue from it).

    Returns:
        ``(layout line, warp parameters)`` per pair, in order.
    """
    cat = photo.spec.category
    src, src_params = _source_view(photo, f"{cat}_{split}_00", rng)
    src_pts, src_vis = _view_points(src, photo)
    src_ann = _write_image(spair, src, photo, photo.rgb, _photometric(rng, False), rng)
    out = []
    for j, (viewpoint, scale) in enumerate(levels):
        trg, trg_params = _target_view(
            photo, src, f"{cat}_{split}_{j + 1:02d}", viewpoint, scale, rng
        )
        trg_pts, trg_vis = _view_points(trg, photo)
        pixels = photo.right_rgb if trg.right and photo.right_rgb is not None else photo.rgb
        trg_ann = _write_image(spair, trg, photo, pixels, _photometric(rng, True), rng)

        both = np.flatnonzero(src_vis & trg_vis)
        n = int(rng.integers(_KPS_PER_PAIR[0], _KPS_PER_PAIR[1] + 1))
        ids = np.sort(rng.choice(both, size=min(n, len(both)), replace=False))
        pair_id = first_index + j + 1
        line = f"{pair_id:06d}-{src.name}-{trg.name}:{cat}"
        ann = {
            "pair_id": pair_id,
            "filename": line,
            "src_imname": f"{src.name}.jpg",
            "trg_imname": f"{trg.name}.jpg",
            "src_imsize": [src.wh[0], src.wh[1], 3],
            "trg_imsize": [trg.wh[0], trg.wh[1], 3],
            "src_bndbox": src_ann["bndbox"],
            "trg_bndbox": trg_ann["bndbox"],
            "category": cat,
            "src_pose": "Unspecified",
            "trg_pose": "Unspecified",
            "src_kps": [[int(src_pts[i, 0]), int(src_pts[i, 1])] for i in ids],
            "trg_kps": [[int(trg_pts[i, 0]), int(trg_pts[i, 1])] for i in ids],
            "kps_ids": [str(int(i)) for i in ids],
            "mirror": 0,
            # The stereo baseline is a real viewpoint change on top of the warp.
            "viewpoint_variation": max(viewpoint, 1) if trg.right else viewpoint,
            "scale_variation": scale,
            "truncation": 0,
            "occlusion": 0,
        }
        _write_text(spair / "PairAnnotation" / split / f"{line}.json", _dumps(ann))
        out.append((line, {"source": _rounded(src_params), "target": _rounded(trg_params)}))
    return out


def _write_image(
    spair: Path,
    view: _View,
    photo: _Photo,
    pixels: np.ndarray,
    photometric: dict[str, Any],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Render and save one view with its ImageAnnotation; return the annotation."""
    cat = photo.spec.category
    rgb = _render(view, pixels, photometric, rng)
    _write_jpeg(spair / "JPEGImages" / cat / f"{view.name}.jpg", rgb)
    ann = _image_annotation(view, photo)
    _write_text(spair / "ImageAnnotation" / cat / f"{view.name}.json", _dumps(ann))
    return ann


def _rounded(params: dict[str, Any]) -> dict[str, Any]:
    """Warp parameters for the manifest, rounded so the JSON stays short."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, float):
            out[k] = round(v, 4)
        elif isinstance(v, tuple):
            out[k] = [round(float(x), 4) for x in v]
        else:
            out[k] = v
    return out
