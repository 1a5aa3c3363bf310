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
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from scotsearch._process import pid_alive
from scotsearch.errors import ConfigError
from scotsearch.errors import DataError

try:  # POSIX only; elsewhere installs are merely unlocked (the rename is still atomic).
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


#: Bump whenever the generated content changes; an older tree is regenerated.
DEMO_VERSION = 1

#: Splits written, in order.
DEMO_SPLITS = ("val", "test")

#: Pairs per category in each split.
PAIRS_PER_CATEGORY = 4

#: The file whose presence (written last) marks a complete tree.
MANIFEST_NAME = "demo_manifest.json"

_GENERATOR = "scotsearch.data.demo"
_KPS_PER_CATEGORY = 30
_KPS_PER_PAIR = (8, 20)
_MIN_KPS = 5
_EDGE_MARGIN = 2  # a keypoint must lie this many pixels inside its image
_SIDE_RANGE = (240, 400)  # longer image side, inclusive
_JPEG_QUALITY = 90

# Level bands (see the module docstring).
_ROT_BANDS = ((0.0, 6.0), (6.0, 13.0), (13.0, 20.0))
_TILT_BANDS = ((0.0, 0.06), (0.06, 0.13), (0.13, 0.20))
_ZOOM_BANDS = ((1.0, 1.12), (1.12, 1.30), (1.30, 1.50))
_TPS_JITTER = (0.006, 0.012, 0.018)
_TPS_PROBABILITY = 0.5


@dataclass(frozen=True)
class _PhotoSpec:
    """One category's source photo, as bundled with scikit-image."""

    category: str
    file: str
    bbox: tuple[int, int, int, int]
    right_file: str | None = None
    disparity_file: str | None = None


# Boxes were drawn by eye on the full-size photos.
_PHOTOS = (
    _PhotoSpec("astronaut", "astronaut.png", (18, 12, 370, 511)),
    _PhotoSpec("cameraman", "camera.png", (0, 63, 332, 511)),
    _PhotoSpec("cat", "chelsea.png", (30, 0, 400, 299)),
    _PhotoSpec("coffee", "coffee.png", (75, 15, 480, 390)),
    _PhotoSpec(
        "motorbike",
        "motorcycle_left.png",
        (93, 85, 685, 450),
        right_file="motorcycle_right.png",
        disparity_file="motorcycle_disp.npz",
    ),
    _PhotoSpec("rocket", "rocket.jpg", (265, 125, 380, 426)),
)

#: Category names of the demo benchmark, sorted.
DEMO_CATEGORIES = tuple(sorted(p.category for p in _PHOTOS))


# ----------------------------------------------------------------------------------------
# Public entry point


def demo_path(root: Path, seed: int = 0) -> Path:
    """The ``SPair-71k`` folder :func:`ensure_demo` fills for ``seed`` (may not exist yet)."""
    return Path(root) / f"seed{seed}" / "SPair-71k"


def ensure_demo(root: Path, seed: int = 0) -> Path:
    """Return the demo benchmark's ``SPair-71k`` folder, generating it if needed.

    A complete tree of the current :data:`DEMO_VERSION` and this seed is reused as it is.
    Otherwise the tree is generated in a temporary sibling folder and renamed into
    ``root/seed<seed>``, replacing any incomplete or outdated one. If another process
    installs a valid tree first, that one is kept and this call's copy is deleted.

    Args:
        root: folder holding one ``seed<N>`` subfolder per seed (created if missing).
        seed: non-negative integer; all randomness derives from it.

    Returns:
        ``root/seed<seed>/SPair-71k``, readable by the SPair-71k reader.

    Raises:
        ConfigError: ``seed`` is not a non-negative integer.
        DataError: a bundled photo is missing or the folder cannot be written.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"demo seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    root = Path(root)
    final = root / f"seed{seed}"
    spair = final / "SPair-71k"
    if _is_complete(spair, seed):
        return spair
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(root, seed)
        tmp = root / f".seed{seed}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"cannot create the demo dataset under {root}: {e}") from e
    try:
        _write_dataset(tmp / "SPair-71k", seed)
        _install(tmp, final, seed)
    except OSError as e:
        raise DataError(f"cannot write the demo dataset under {root}: {e}") from e
    finally:
        # Still here when another process won the race, or when writing failed.
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return spair


# ----------------------------------------------------------------------------------------
# Atomic installation


def _is_complete(spair: Path, seed: int) -> bool:
    """True when ``spair`` holds a whole tree of this version and seed.

    The manifest is written last and lists every file with its size, so a tree cut short,
    or later damaged by removing or truncating files, does not pass.
    """
    try:
        manifest = json.loads((spair / MANIFEST_NAME).read_text(encoding="utf-8"))
        if (
            manifest.get("generator") != _GENERATOR
            or manifest.get("version") != DEMO_VERSION
            or manifest.get("seed") != seed
        ):
            return False
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            return False
        return all((spair / rel).stat().st_size == size for rel, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _host() -> str:
    # Temporary names carry the host so a process only ever judges its own host's pids.
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


@contextlib.contextmanager
def _install_lock(root: Path, seed: int) -> Iterator[None]:
    """Serialise check-and-replace of ``root/seed<seed>`` across processes and threads.

    ``flock`` locks belong to the open file description, so two threads of one process
    that each open the lock file exclude each other too.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(root / f".seed{seed}.lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _install(tmp: Path, final: Path, seed: int) -> None:
    """Rename the finished ``tmp`` tree to ``final`` unless a valid one got there first."""
    with _install_lock(final.parent, seed):
        if _is_complete(final / "SPair-71k", seed):
            return  # another caller finished first; the caller deletes tmp
        # Trash folders are only made and emptied under this lock: any found now are
        # leftovers of a killed run.
        for old in final.parent.glob(f".seed{seed}.trash-*"):
            shutil.rmtree(old, ignore_errors=True)
        if final.exists() or final.is_symlink():
            # Move the stale tree aside in one step, so no reader ever sees it half deleted.
            trash = final.parent / f".seed{seed}.trash-{uuid.uuid4().hex[:12]}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)


def _remove_dead_temporaries(root: Path, seed: int) -> None:
    """Delete temporary trees left by killed generators of this host.

    A temporary tree whose process is still alive belongs to a concurrent caller and is
    left alone; one whose pid no longer exists can never be completed.
    """
    prefix = f".seed{seed}.tmp-{_host()}-"
    for path in root.glob(f".seed{seed}.tmp-*"):
        if not path.name.startswith(prefix):
            continue
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        if not pid_alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# Geometry: homographies and the thin-plate spline


def _apply_h(h: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ``[N x 2]`` points by a 3x3 homography.

    Returns:
        The mapped points and a mask of points in front of the projective horizon (only
        those have a meaningful image).
    """
    w = pts @ h[2, :2] + h[2, 2]
    ok = w > 1e-8
    w_safe = np.where(ok, w, 1.0)
    x = (pts @ h[0, :2] + h[0, 2]) / w_safe
    y = (pts @ h[1, :2] + h[1, 2]) / w_safe
    return np.stack([x, y], axis=1), ok


def _view_homography(
    src_wh: tuple[int, int],
    dst_wh: tuple[int, int],
    rotation_deg: float,
    zoom: float,
    tilt: tuple[float, float],
    shift: tuple[float, float],
) -> np.ndarray:
    """Homography from ``src`` pixels to ``dst`` pixels.

    Both frames are normalised (centre 0, half the longer side 1), so with identity
    parameters the picture fills ``dst`` as it filled ``src`` whatever the two sizes. In
    normalised units: tilt ``x -> x / (1 + t . x)``, then rotate and zoom, then shift.
    """
    (ws, hs), (wd, hd) = src_wh, dst_wh
    rs, rd = max(ws, hs) / 2.0, max(wd, hd) / 2.0
    norm = np.array([[1 / rs, 0, -(ws - 1) / 2 / rs], [0, 1 / rs, -(hs - 1) / 2 / rs], [0, 0, 1]])
    persp = np.array([[1.0, 0, 0], [0, 1.0, 0], [tilt[0], tilt[1], 1.0]])
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    sim = np.array([[zoom * c, -zoom * s, shift[0]], [zoom * s, zoom * c, shift[1]], [0, 0, 1]])
    denorm = np.array([[rd, 0, (wd - 1) / 2], [0, rd, (hd - 1) / 2], [0, 0, 1]])
    return denorm @ sim @ persp @ norm


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """``U(r) = r^2 log r`` written in ``r^2``, with ``U(0) = 0``."""
    return np.where(d2 > 0, 0.5 * d2 * np.log(np.where(d2 > 0, d2, 1.0)), 0.0)


class _Tps:
    """Thin-plate spline ``x -> x + f(x)`` in the plane, with ``f(c_i) = d_i`` exactly.

    The demo uses it as the *inverse* warp of a target view (target pixel -> pre-TPS target
    pixel), which is what image resampling needs; keypoints go the other way, through
    :meth:`inverse`.

    Args:
        ctrl: ``[N x 2]`` control points (pixels).
        disp: ``[N x 2]`` displacements at the control points (pixels).
    """

    def __init__(self, ctrl: np.ndarray, disp: np.ndarray) -> None:
        # Solve in coordinates of order 1: r^2 log r of pixel distances spans too many
        # orders of magnitude for a well-conditioned system.
        self.scale = float(np.abs(ctrl).max()) or 1.0
        c = np.asarray(ctrl, dtype=np.float64) / self.scale
        n = len(c)
        system = np.zeros((n + 3, n + 3))
        system[:n, :n] = _tps_kernel(_sq_dist(c, c))
        system[:n, n] = 1.0
        system[:n, n + 1 :] = c
        system[n, :n] = 1.0
        system[n + 1 :, :n] = c.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = np.asarray(disp, dtype=np.float64) / self.scale
        sol = np.linalg.solve(system, rhs)
        self.ctrl = c
        self.w = sol[:n]  # kernel weights
        self.a = sol[n:]  # affine part: rows constant, x, y

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """Map ``[M x 2]`` pixel points."""
        u = np.asarray(pts, dtype=np.float64) / self.scale
        return (u + self._f(u)) * self.scale

    def _f(self, u: np.ndarray) -> np.ndarray:
        return _tps_kernel(_sq_dist(u, self.ctrl)) @ self.w + self.a[0] + u @ self.a[1:]

    def jacobian(self, pts: np.ndarray) -> np.ndarray:
        """``[M x 2 x 2]`` Jacobians ``d out_k / d in_l`` (scale-free)."""
        u = np.asarray(pts, dtype=np.float64) / self.scale
        diff = u[:, None, :] - self.ctrl[None, :, :]  # M x N x 2
        d2 = (diff**2).sum(-1)
        # grad_u r^2 log r = (u - c)(log r^2 + 1), which tends to 0 at r = 0.
        log_d2 = np.log(np.where(d2 > 0, d2, 1.0))
        g = np.where(d2[..., None] > 0, diff * (log_d2 + 1.0)[..., None], 0.0)
        jac = np.einsum("nk,mnl->mkl", self.w, g) + self.a[1:].T[None]
        return jac + np.eye(2)[None]

    def inverse(self, pts: np.ndarray, iters: int = 30) -> np.ndarray:
        """Solve ``self(x) = y`` for each ``[M x 2]`` point ``y`` by Newton's method.

        Raises:
            DataError: some point did not converge to 1e-6 px (the spline folds there).
        """
        y = np.asarray(pts, dtype=np.float64)
        x = y.copy()
        for _ in range(iters):
            r = self(x) - y
            if np.abs(r).max(initial=0.0) < 1e-9:
                break
            x = x - np.linalg.solve(self.jacobian(x), r[..., None])[..., 0]
        if len(y) and np.abs(self(x) - y).max() > 1e-6:
            raise DataError("demo generator: thin-plate spline inversion did not converge")
        return x


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[M x N]`` squared distances between ``[M x 2]`` and ``[N x 2]`` points."""
    # Expanded form: a matrix product instead of an M x N x 2 temporary, which makes the
    # per-pixel spline of a whole image several times faster. Inputs are O(1) in size, so
    # the cancellation error is ~1e-16; the clamp keeps it from going negative.
    d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def _random_tps(rng: np.random.Generator, wh: tuple[int, int], jitter: float) -> _Tps | None:
    """A TPS on a 4x4 control grid over the image, or None if it would fold the image.

    Args:
        jitter: displacement standard deviation as a fraction of the longer side.
    """
    w, h = wh
    gx, gy = np.meshgrid(np.linspace(0, w - 1, 4), np.linspace(0, h - 1, 4))
    ctrl = np.stack([gx.ravel(), gy.ravel()], axis=1)
    sd = jitter * max(w, h)
    disp = np.clip(rng.normal(0.0, sd, ctrl.shape), -2.5 * sd, 2.5 * sd)
    tps = _Tps(ctrl, disp)
    # Keep the warp far from folding: a local area ratio near 1 everywhere on the image
    # also makes Newton's inversion converge in a few steps.
    sx, sy = np.meshgrid(np.linspace(0, w - 1, 17), np.linspace(0, h - 1, 17))
    det = np.linalg.det(tps.jacobian(np.stack([sx.ravel(), sy.ravel()], axis=1)))
    return tps if det.min() > 0.6 else None


@dataclass(frozen=True)
class _View:
    """One generated image: photo pixels -> ``G`` -> (TPS inverse) -> view pixels.

    Attributes:
        name: image name without ``.jpg``.
        wh: ``(W, H)``.
        g: 3x3 homography from photo pixels to pre-TPS view pixels.
        tps: the spline mapping view pixels to pre-TPS view pixels, or None.
        right: sample the stereo partner photo (motorbike targets).
    """

    name: str
    wh: tuple[int, int]
    g: np.ndarray
    tps: _Tps | None = None
    right: bool = False

    def from_photo(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photo points ``[N x 2]`` -> view points (float) and a validity mask."""
        p, ok = _apply_h(self.g, q)
        if self.tps is not None and ok.any():
            p[ok] = self.tps.inverse(p[ok])
        return p, ok

    def to_photo(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """View points ``[N x 2]`` -> photo points and a validity mask."""
        if self.tps is not None:
            p = self.tps(p)
        return _apply_h(np.linalg.inv(self.g), p)


# ----------------------------------------------------------------------------------------
# Photos and their keypoints


@dataclass(frozen=True)
class _Photo:
    """A loaded source photo.

    Attributes:
        spec: what it is.
        rgb: ``[H x W x 3]`` float32 in 0..255.
        right_rgb: the stereo partner, or None.
        disparity: ``[H x W]`` left-image disparity (inf where unknown), or None.
        kps: ``[K x 2]`` keypoints in (left) photo pixels, integer-valued.
        kps_right: the same points in the right photo, or None.
    """

    spec: _PhotoSpec
    rgb: np.ndarray
    right_rgb: np.ndarray | None
    disparity: np.ndarray | None
    kps: np.ndarray
    kps_right: np.ndarray | None

    @property
    def wh(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])


def _data_dir() -> Path:
    """scikit-image's bundled data folder, located without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the demo dataset needs scikit-image's bundled photos; install scikit-image"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _read_rgb(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"scikit-image sample photo not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float32)
    except OSError as e:
        raise DataError(f"cannot read scikit-image sample photo {path}: {e}") from e


def _load_photo(spec: _PhotoSpec, rng: np.random.Generator) -> _Photo:
    folder = _data_dir()
    rgb = _read_rgb(folder / spec.file)
    right = disp = valid = None
    if spec.right_file is not None and spec.disparity_file is not None:
        right = _read_rgb(folder / spec.right_file)
        path = folder / spec.disparity_file
        try:
            with np.load(path) as z:
                disp = np.asarray(z[z.files[0]], dtype=np.float64)
        except (OSError, ValueError, IndexError) as e:
            raise DataError(f"cannot read scikit-image disparity map {path}: {e}") from e
        if disp.shape != rgb.shape[:2] or right.shape != rgb.shape:
            raise DataError(f"scikit-image stereo pair {spec.file}: sizes do not match")
        valid = _stereo_valid(disp)
    kps = _photo_keypoints(rgb, spec.bbox, rng, valid)
    kps_right = None
    if disp is not None and right is not None:
        kps, kps_right = _stereo_consistent(kps, disp, rgb, right)
    if len(kps) < _KPS_PER_PAIR[0]:
        raise DataError(f"demo generator: only {len(kps)} keypoints found on {spec.file}")
    return _Photo(spec, rgb, right, disp, kps, kps_right)


def _photo_keypoints(
    rgb: np.ndarray,
    bbox: tuple[int, int, int, int],
    rng: np.random.Generator,
    valid: np.ndarray | None,
) -> np.ndarray:
    """Up to 30 spread-out corner-like pixels inside ``bbox``, ``[K x 2]`` as (x, y)."""
    gray = rgb.mean(axis=2).astype(np.float64)
    smooth = ndimage.gaussian_filter(gray, 1.0)
    ix = ndimage.sobel(smooth, axis=1)
    iy = ndimage.sobel(smooth, axis=0)
    sxx = ndimage.gaussian_filter(ix * ix, 2.0)
    syy = ndimage.gaussian_filter(iy * iy, 2.0)
    sxy = ndimage.gaussian_filter(ix * iy, 2.0)
    # Smaller eigenvalue of the structure tensor: large only where the texture pins a
    # point down in both directions, so the keypoint is well defined, not sliding on an edge.
    lam = 0.5 * (sxx + syy) - np.sqrt(0.25 * (sxx - syy) ** 2 + sxy**2)

    h, w = gray.shape
    x1, y1, x2, y2 = bbox
    margin = 8
    mask = np.zeros((h, w), dtype=bool)
    rows = slice(max(y1, margin), min(y2, h - 1 - margin) + 1)
    cols = slice(max(x1, margin), min(x2, w - 1 - margin) + 1)
    mask[rows, cols] = True
    if valid is not None:
        mask &= valid
    if not mask.any():
        raise DataError("demo generator: empty keypoint region")
    mask &= lam >= np.percentile(lam[mask], 70)
    ys, xs = np.nonzero(mask)
    weight = lam[ys, xs] / lam[ys, xs].max() + 1e-6
    # Weighted sampling without replacement (Efraimidis-Spirakis keys): stronger corners
    # tend to come first, but the set varies with the seed.
    order = np.argsort(-(rng.random(len(xs)) ** (1.0 / weight)), kind="stable")
    d_min2 = (0.07 * max(x2 - x1, y2 - y1)) ** 2
    chosen: list[tuple[int, int]] = []
    for i in order:
        x, y = int(xs[i]), int(ys[i])
        if all((x - cx) ** 2 + (y - cy) ** 2 >= d_min2 for cx, cy in chosen):
            chosen.append((x, y))
            if len(chosen) == _KPS_PER_CATEGORY:
                break
    return np.array(chosen, dtype=np.float64).reshape(-1, 2)


def _stereo_valid(disp: np.ndarray) -> np.ndarray:
    """Left pixels whose disparity is known, smooth and not occluded in the right image."""
    finite = np.isfinite(disp)
    # Known over a 5x5 window and varying by at most 1.5 px in it: rounding the keypoint
    # then never jumps across a depth edge.
    known = ndimage.minimum_filter(finite, size=5)
    filled = np.where(finite, disp, 0.0)
    spread = ndimage.maximum_filter(filled, size=5) - ndimage.minimum_filter(filled, size=5)
    h, w = disp.shape
    xs = np.arange(w, dtype=np.float64)[None, :]
    xr = np.where(finite, xs - filled, np.inf)
    # A left pixel is hidden in the right view when a pixel further right (hence nearer,
    # with a larger disparity) lands on (nearly) the same right-image column.
    suffix_min = np.minimum.accumulate(xr[:, ::-1], axis=1)[:, ::-1]
    further = np.concatenate([suffix_min[:, 1:], np.full((h, 1), np.inf)], axis=1)
    visible = further > xr + 0.5
    inside = (xr >= 8) & (xr <= w - 9)
    return known & (spread <= 1.5) & visible & inside


def _stereo_consistent(
    kps: np.ndarray, disp: np.ndarray, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Keep keypoints whose 7x7 patch looks alike in both photos; also return right points."""
    xs, ys = kps[:, 0].astype(int), kps[:, 1].astype(int)
    right_pts = np.stack([kps[:, 0] - disp[ys, xs], kps[:, 1]], axis=1)
    lg, rg = left.mean(axis=2), right.mean(axis=2)
    off = np.arange(-3, 4, dtype=np.float64)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    keep = []
    for i, (x, y) in enumerate(kps):
        a = lg[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4]
        b = ndimage.map_coordinates(rg, [right_pts[i, 1] + oy, right_pts[i, 0] + ox], order=1)
        keep.append(np.abs(a - b).mean() < 10.0)
    k = np.array(keep, dtype=bool)
    return kps[k], right_pts[k]


# ----------------------------------------------------------------------------------------
# Rendering


def _canvas(rng: np.random.Generator, aspect: float) -> tuple[int, int]:
    """A ``(W, H)`` with the given aspect (W/H) and a random longer side."""
    side = int(rng.integers(_SIDE_RANGE[0], _SIDE_RANGE[1] + 1))
    if aspect >= 1.0:
        return side, max(2, int(round(side / aspect)))
    return max(2, int(round(side * aspect))), side


def _render(
    view: _View, photo: np.ndarray, photometric: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Sample ``photo`` into ``view``, then apply photometric jitter; ``[H x W x 3]`` uint8."""
    w, h = view.wh
    # Photo pixels per view pixel at the centre, from a finite-difference Jacobian.
    cx, cy = (w - 1) / 2, (h - 1) / 2
    c = np.array([[cx, cy], [cx + 1, cy], [cx, cy + 1]])
    q, _ = view.to_photo(c)
    jac = np.stack([q[1] - q[0], q[2] - q[0]], axis=1)
    shrink = math.sqrt(abs(float(np.linalg.det(jac))))
    sigma = max(0.0, (shrink - 1.0) / 2.0)  # skimage.transform.rescale's anti-alias rule
    src = ndimage.gaussian_filter(photo, (sigma, sigma, 0)) if sigma > 0.05 else photo

    yy, xx = np.mgrid[0:h, 0:w]
    p = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(np.float64)
    if view.tps is not None:
        p = p + _dense_displacement(view.tps, view.wh)
    q, ok = _apply_h(np.linalg.inv(view.g), p)
    q[~ok] = -1e4  # behind the projective horizon: fill
    fill = photo.reshape(-1, 3).mean(axis=0)
    out = np.empty((h, w, 3), dtype=np.float64)
    for ch in range(3):
        out[..., ch] = ndimage.map_coordinates(
            src[..., ch], [q[:, 1], q[:, 0]], order=1, mode="constant", cval=float(fill[ch])
        ).reshape(h, w)

    mean = out.mean()
    out = (out - mean) * photometric["contrast"] + mean + photometric["brightness"]
    out *= np.asarray(photometric["gain"])[None, None, :]
    out += rng.normal(0.0, photometric["noise"], out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _dense_displacement(tps: _Tps, wh: tuple[int, int], step: int = 4) -> np.ndarray:
    """``tps(p) - p`` at every pixel, ``[H*W x 2]`` in row-major order.

    The spline is evaluated exactly on every ``step``-th pixel and interpolated with cubic
    splines in between: the displacement is so smooth (a few pixels over a 4x4 control grid)
    that this stays within about 0.02 px of the exact value, at a fraction of the cost.
    """
    w, h = wh
    # A uniform grid reaching two steps past every border, so the spline's boundary
    # handling only affects samples outside the image.
    gx = np.arange(-2 * step, w - 1 + 3 * step, step, dtype=np.float64)
    gy = np.arange(-2 * step, h - 1 + 3 * step, step, dtype=np.float64)
    cx, cy = np.meshgrid(gx, gy)
    coarse = np.stack([cx.ravel(), cy.ravel()], axis=1)
    disp = (tps(coarse) - coarse).reshape(len(gy), len(gx), 2)
    iy, ix = np.mgrid[0:h, 0:w]
    coords = [(iy.ravel() + 2 * step) / step, (ix.ravel() + 2 * step) / step]
    out = np.empty((h * w, 2))
    for k in range(2):
        out[:, k] = ndimage.map_coordinates(disp[..., k], coords, order=3, mode="nearest")
    return out


def _photometric(rng: np.random.Generator, strong: bool) -> dict[str, Any]:
    if strong:
        return {
            "contrast": float(rng.uniform(0.8, 1.2)),
            "brightness": float(rng.uniform(-20.0, 20.0)),
            "gain": [float(g) for g in rng.uniform(0.93, 1.07, 3)],
            "noise": float(rng.uniform(1.0, 4.0)),
        }
    return {
        "contrast": float(rng.uniform(0.95, 1.05)),
        "brightness": float(rng.uniform(-5.0, 5.0)),
        "gain": [1.0, 1.0, 1.0],
        "noise": 1.0,
    }


# ----------------------------------------------------------------------------------------
# Views, pairs and files


def _source_view(
    photo: _Photo, name: str, rng: np.random.Generator
) -> tuple[_View, dict[str, Any]]:
    wh = _canvas(rng, photo.wh[0] / photo.wh[1])
    if rng.random() < 1.0 / 3.0:
        params: dict[str, Any] = {
            "rotation_deg": 0.0,
            "zoom": 1.0,
            "tilt": (0.0, 0.0),
            "shift": (0.0, 0.0),
        }
    else:
        phi = rng.uniform(0, 2 * math.pi)
        t = rng.uniform(0.0, 0.03)
        params = {
            "rotation_deg": float(rng.uniform(-3.0, 3.0)),
            "zoom": float(rng.uniform(1.0, 1.08)),
            "tilt": (t * math.cos(phi), t * math.sin(phi)),
            "shift": tuple(float(v) for v in rng.uniform(-0.03, 0.03, 2)),
        }
    g = _view_homography(photo.wh, wh, **params)
    return _View(name, wh, g), params


def _relative_params(rng: np.random.Generator, viewpoint: int, scale: int) -> dict[str, Any]:
    rot = rng.uniform(*_ROT_BANDS[viewpoint]) * rng.choice([-1.0, 1.0])
    tilt = rng.uniform(*_TILT_BANDS[viewpoint])
    phi = rng.uniform(0, 2 * math.pi)
    zoom = rng.uniform(*_ZOOM_BANDS[scale]) ** rng.choice([-1.0, 1.0])
    return {
        "rotation_deg": float(rot),
        "zoom": float(zoom),
        "tilt": (float(tilt * math.cos(phi)), float(tilt * math.sin(phi))),
        "shift": tuple(float(v) for v in rng.uniform(-0.07, 0.07, 2)),
    }


def _visible(p: np.ndarray, ok: np.ndarray, wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Round view points to whole pixels; mask those at least the margin inside."""
    r = np.rint(p)
    m = _EDGE_MARGIN
    inside = ok & (r >= m).all(axis=1) & (r[:, 0] <= wh[0] - 1 - m) & (r[:, 1] <= wh[1] - 1 - m)
    return r.astype(np.int64), inside


def _view_points(view: _View, photo: _Photo) -> tuple[np.ndarray, np.ndarray]:
    """All category keypoints in ``view``, rounded, and their visibility mask."""
    q = photo.kps_right if view.right and photo.kps_right is not None else photo.kps
    p, ok = view.from_photo(q)
    return _visible(p, ok, view.wh)


def _view_box(view: _View, photo: _Photo) -> list[int]:
    """The photo's object box mapped into ``view``, ``[x1, y1, x2, y2]`` ints, clipped."""
    x1, y1, x2, y2 = (float(v) for v in photo.spec.bbox)
    if view.right and photo.disparity is not None:
        d = photo.disparity[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1]
        shift = float(np.median(d[np.isfinite(d)]))
        x1, x2 = x1 - shift, x2 - shift
    t = np.linspace(0.0, 1.0, 33)
    edge = np.concatenate(
        [
            np.stack([x1 + (x2 - x1) * t, np.full_like(t, y1)], 1),
            np.stack([x1 + (x2 - x1) * t, np.full_like(t, y2)], 1),
            np.stack([np.full_like(t, x1), y1 + (y2 - y1) * t], 1),
            np.stack([np.full_like(t, x2), y1 + (y2 - y1) * t], 1),
        ]
    )
    p, ok = view.from_photo(edge)
    p = p[ok]
    w, h = view.wh
    lo = np.rint(p.min(axis=0))
    hi = np.rint(p.max(axis=0))
    return [
        int(np.clip(lo[0], 0, w - 1)),
        int(np.clip(lo[1], 0, h - 1)),
        int(np.clip(hi[0], 0, w - 1)),
        int(np.clip(hi[1], 0, h - 1)),
    ]


def _target_view(
    photo: _Photo,
    src: _View,
    name: str,
    viewpoint: int,
    scale: int,
    rng: np.random.Generator,
) -> tuple[_View, dict[str, Any]]:
    """Draw a target warp of the given levels that shares at least 5 keypoints with ``src``."""
    _, src_vis = _view_points(src, photo)
    src_aspect = src.wh[0] / src.wh[1]
    for _ in range(100):
        wh = _canvas(rng, src_aspect * float(rng.uniform(0.9, 1.1)))
        params = _relative_params(rng, viewpoint, scale)
        rel = _view_homography(src.wh, wh, **params)
        tps = None
        if rng.random() < _TPS_PROBABILITY:
            tps = _random_tps(rng, wh, _TPS_JITTER[viewpoint])
            if tps is None:
                continue
        # Stereo targets view the right photo through the source's own homography: the
        # rectified pair shares one pixel frame, and the disparity supplies the rest.
        view = _View(name, wh, rel @ src.g, tps, right=photo.right_rgb is not None)
        _, trg_vis = _view_points(view, photo)
        if (src_vis & trg_vis).sum() >= _MIN_KPS:
            kind = ("stereo+" if view.right else "") + ("tps" if tps is not None else "homography")
            return view, {"warp": kind, **params}
    raise DataError(f"demo generator: no usable target warp for {photo.spec.category}")


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


def _level_plan(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    """``n`` (viewpoint, scale) level pairs, each of the nine combinations dealt evenly."""
    combos = [(v, s) for v in range(3) for s in range(3)]
    deck: list[tuple[int, int]] = []
    while len(deck) < n:
        deck.extend(combos[i] for i in rng.permutation(len(combos)))
    return deck[:n]


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
