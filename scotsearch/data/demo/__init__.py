"""The embedded ``demo`` benchmark: real photos under known warps, in SPair-71k layout.

No benchmark download is needed to try scotsearch: :func:`ensure_demo` writes a small set of
image pairs on first use, in the SPair-71k on-disk layout (reference-behaviour.md §9.1), so
the ordinary SPair reader loads it. Everything is deterministic by ``seed``: the same seed
gives byte-identical JSON and identical image pixels.

Sources. Six photos bundled inside the scikit-image wheel (its ``skimage/data`` folder;
nothing is fetched), one category each, with a hand-chosen object box in photo pixels:

=========== ======================= ==========================================
category    photo                   box (x1, y1, x2, y2)
=========== ======================= ==========================================
astronaut   astronaut.png           the astronaut's upper body
cameraman   camera.png (gray->RGB)  the cameraman with his camera
cat         chelsea.png             the cat's face
coffee      coffee.png              cup and saucer
motorbike   motorcycle_left.png     the motorbike (stereo pair, see below)
rocket      rocket.jpg              the rocket on its launch pad
=========== ======================= ==========================================

Splits. ``val`` and ``test`` each hold 4 pairs per category: 24 pairs per split, 48 in all.
Per category and split there is one source image (shared by its 4 pairs, as SPair shares
images between pairs) and 4 target images, so 60 JPEGs in all. Pair ids restart at 1 in
each split, as in SPair. Image names are ``<category>_<split>_<k>`` (k = 00 for the source,
01..04 for the targets); they contain no ``-``, which the layout-line format reserves.

Views. Every image is a *view* of its photo: a homography ``G`` from photo pixels to view
pixels, optionally followed by a thin-plate spline (TPS), rendered by inverse mapping with
``scipy.ndimage.map_coordinates`` (bilinear; Gaussian pre-blur when the view shrinks the
photo, to avoid aliasing; outside the photo the fill is the photo's mean colour). Each view
has its own size: the longer side is drawn from 240..400 px.

* Source: with probability 1/3 the photo merely resized, else a mild homography
  (rotation <= 3 deg, zoom 1.00-1.08, perspective tilt <= 0.03, shift <= 3 %), plus mild
  photometric jitter.
* Target: a homography *relative to the source view* (so the levels below describe the
  source-to-target change), built in normalised coordinates (image centre 0, half the longer
  side 1): perspective tilt ``x -> x / (1 + t . x)``, rotation, zoom, shift (<= 7 %). The
  aspect ratio varies by up to 10 %. Half of the targets also get a TPS on a 4 x 4 grid of
  control points with Gaussian jitter, used as the inverse map (target pixel -> pre-TPS
  target pixel; evaluated exactly every 4 px and spline-interpolated in between, within
  0.02 px) and inverted numerically for keypoints. Photometric jitter: contrast 0.8-1.2,
  brightness +-20, per-channel gain +-7 %, Gaussian noise sigma 1-4 grey levels.
* motorbike: the target views sample ``motorcycle_right.png`` instead; the pair is the
  Middlebury stereo pair with its left-image disparity ``d`` (``motorcycle_disp.npz``),
  so a left photo point ``(x, y)`` is ``(x - d, y)`` in the right photo (checked on the
  data: patch differences are lowest for this sign and no vertical offset).

Difficulty levels (SPair's ``viewpoint_variation`` and ``scale_variation``: 0 easy,
1 medium, 2 hard) are the bands the target warp was drawn from. Within a split the
(viewpoint, scale) combinations are dealt out evenly from a shuffled list of all nine, so
every level of both factors occurs in every split.

============ ======================== ===================== ========================
level        abs. rotation (deg)      perspective tilt      zoom (or its inverse)
============ ======================== ===================== ========================
0 easy       0-6                      0-0.06                1.00-1.12
1 medium     6-13                     0.06-0.13             1.12-1.30
2 hard       13-20                    0.13-0.20             1.30-1.50
============ ======================== ===================== ========================

Rotation and tilt follow the viewpoint level, zoom the scale level; the TPS jitter standard
deviation is 0.6 %, 1.2 % or 1.8 % of the target's longer side by viewpoint level. Because
SCOT resizes every image to the same longer side, zoom is what changes the object's apparent
scale, not the canvas size. The stereo pairs are at least viewpoint level 1. ``truncation``,
``occlusion`` and ``mirror`` are always 0; poses are ``Unspecified``.

Keypoints. Per category, up to 30 photo pixels on the object: strong corners (the smaller
eigenvalue of the structure tensor, top 30 % inside the box, at least 8 px from the photo
border), drawn by seeded weighted sampling and kept at least 7 % of the box's longer side
apart. For the motorbike they must also have a smooth, valid disparity, be visible in the
right photo (not occluded by a nearer surface) and look alike in both photos. The keypoint
ids are the indices into this per-category list, so ``kps_ids`` mean the same physical point
across the pairs of a category, as in SPair. A keypoint is visible in a view when its mapped
position, rounded to whole pixels, lies at least 2 px inside the image. Each pair lists a
random subset of 8-20 ids visible in both images (all of them if fewer; at least 5, else
the target warp is redrawn). Coordinates are integers like SPair's, so each stored keypoint
is within 0.5 px per axis of its exact mapped position (TPS points are solved by Newton's
method to 1e-6 px first).

Boxes. The photo box mapped into each view (its boundary densely sampled and mapped, then
the extent, rounded and clipped to the image). For the motorbike's right-photo views the box
is the left box shifted by the median disparity inside it (a few pixels off at the edges).

Files, under ``<root>/seed<seed>/SPair-71k``::

    JPEGImages/<category>/<imname>.jpg          JPEG quality 90
    ImageAnnotation/<category>/<imname>.json    SPair image fields; kps "0".."29" or null
    PairAnnotation/<split>/<line>.json          SPair pair fields, same names and types
    Layout/large/{val,test}.txt                 <pair_id>-<src>-<trg>:<category> lines
    demo_manifest.json                          written last: version, seed, file sizes,
                                                each pair's warp parameters

Generation is atomic: the tree is written in a hidden temporary sibling folder and renamed
into place under a lock, so a killed run never leaves a half dataset that reads as
complete, and concurrent callers end with one valid copy.

Modules, each depending only on those listed before it: ``_warps`` (homographies, the
thin-plate spline, views as maps), ``_photos`` (photos, boxes, keypoints), ``_render``
(resampling and photometric jitter), ``_views`` (the warps of each pair, keypoints and
boxes in a view), ``_spair_files`` (the SPair-format files and the manifest) and
``_install`` (reuse, locking and the atomic rename; :func:`ensure_demo`).

The package also writes a tiny Caltech-101-layout copy from three of the same photos, with
hand-drawn object outlines, for trying and testing ``--dataset caltech``:
:func:`write_caltech_fixture` (``_caltech_files``, which needs only ``_photos``).
"""

from __future__ import annotations

from scotsearch.data.demo._caltech_files import CALTECH_FIXTURE_CATEGORIES
from scotsearch.data.demo._caltech_files import write_caltech_fixture
from scotsearch.data.demo._install import demo_path
from scotsearch.data.demo._install import ensure_demo
from scotsearch.data.demo._photos import DEMO_CATEGORIES
from scotsearch.data.demo._spair_files import DEMO_SPLITS
from scotsearch.data.demo._spair_files import DEMO_VERSION
from scotsearch.data.demo._spair_files import MANIFEST_NAME
from scotsearch.data.demo._spair_files import PAIRS_PER_CATEGORY


__all__ = [
    "CALTECH_FIXTURE_CATEGORIES",
    "DEMO_CATEGORIES",
    "DEMO_SPLITS",
    "DEMO_VERSION",
    "MANIFEST_NAME",
    "PAIRS_PER_CATEGORY",
    "demo_path",
    "ensure_demo",
    "write_caltech_fixture",
]
