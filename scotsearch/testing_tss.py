"""A tiny TSS benchmark in TSS layout, written offline, and a feature source for it.

:func:`write_tss_fixture` crops small images out of photos bundled with scikit-image (as the
demo benchmark does, nothing is fetched): one pair folder per TSS group, each with
``image1.png``, ``image2.png`` (two crops of one photo, so a known translation apart),
``flow1.flo``, ``flow2.flo`` (the exact ground truth) and ``mask1.png``, ``mask2.png``, plus
``test_pairs_tss.csv`` listing both directions of every pair. In the ``PASCAL`` folder
``image1.png`` is stored mirrored and both of its rows carry ``flip_img_A = 1``: matching the
mirrored image A is what makes the translation hold again. One photo is grey (``camera``),
as some TSS images are.

:class:`PixelSource` is a stand-in backbone for command-line tests: every "layer" is the
image itself average-pooled to the layer's stride, read from the file (so the mirrored copy
of a flipped image really is mirrored). No network runs.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from scotsearch.data.flo import write_flo
from scotsearch.data.images import load_image
from scotsearch.errors import DataError
from scotsearch.features import ImageFeatures
from scotsearch.layers import layer_specs


#: group -> (photo, pair folder, mirrored image1, offsets (x, y) of image1's and image2's
#: crop in the downscaled photo).
FIXTURE_PAIRS = {
    "FG3DCar": ("chelsea.png", "001_cat", False, ((6, 4), (11, 7))),
    "JODS": ("camera.png", "002_camera", False, ((9, 8), (5, 10))),
    "PASCAL": ("coffee.png", "003_coffee", True, ((4, 6), (10, 3))),
}

#: ``(H, W)`` of every fixture image.
FIXTURE_HW = (30, 40)


def _photo(name: str) -> np.ndarray:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the TSS fixture needs scikit-image's bundled photos; install it")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    with Image.open(path) as im:
        im.load()
        # Downscale so that the crops hold a recognisable part of the photo; grey stays grey.
        small = im.convert("L" if im.mode == "L" else "RGB").resize(
            (96, 72), Image.Resampling.BILINEAR)
    return np.asarray(small)


def _mask(hw: tuple[int, int]) -> np.ndarray:
    """A centred foreground rectangle, 0/255 as TSS's masks."""
    h, w = hw
    m = np.zeros(hw, dtype=np.uint8)
    m[h // 5 : h - h // 5, w // 5 : w - w // 5] = 255
    return m


def write_tss_fixture(parent: Path) -> Path:
    """Write the fixture into ``parent/TSS`` and return that folder.

    Ground truth: image k's crop starts at offset ``o_k`` of the photo, so pixel ``p`` of
    image 2 shows the photo at ``p + o_2``, which is pixel ``p + o_2 - o_1`` of image 1:
    ``flow2 = o_2 - o_1`` everywhere and ``flow1 = o_1 - o_2``. With image 1 stored
    mirrored (width W), matching it mirrored back gives the same flow2; for the other
    direction the mirrored image 2 is matched to the stored (mirrored) image 1, which moves
    the x component's sign: ``flow1 = (o_2x - o_1x, o_1y - o_2y)``.
    """
    root = Path(parent) / "TSS"
    h, w = FIXTURE_HW
    rows = ["source_image,target_image,flow_direction,flip_img_A,category"]
    for cat_id, (group, (photo, folder, mirrored, (o1, o2))) in enumerate(
        FIXTURE_PAIRS.items(), start=1
    ):
        pic = _photo(photo)
        d = root / group / folder
        d.mkdir(parents=True, exist_ok=True)
        im1 = pic[o1[1] : o1[1] + h, o1[0] : o1[0] + w]
        im2 = pic[o2[1] : o2[1] + h, o2[0] : o2[0] + w]
        if mirrored:
            im1 = im1[:, ::-1]
        Image.fromarray(np.ascontiguousarray(im1)).save(d / "image1.png")
        Image.fromarray(np.ascontiguousarray(im2)).save(d / "image2.png")
        for k in (1, 2):
            Image.fromarray(_mask((h, w))).save(d / f"mask{k}.png")
        dx, dy = o2[0] - o1[0], o2[1] - o1[1]
        flow2 = np.broadcast_to(np.array([dx, dy], np.float32), (h, w, 2))
        flow1 = np.broadcast_to(np.array([dx if mirrored else -dx, -dy], np.float32), (h, w, 2))
        write_flo(d / "flow2.flo", flow2)
        write_flo(d / "flow1.flo", flow1)
        rel = f"{group}/{folder}"
        flip = int(mirrored)
        rows.append(f"{rel}/image1.png,{rel}/image2.png,2,{flip},{cat_id}")
        rows.append(f"{rel}/image2.png,{rel}/image1.png,1,{flip},{cat_id}")
    (root / "test_pairs_tss.csv").write_text("\n".join(rows) + "\n")
    return root


class PixelSource:
    """A FeatureSource whose layers are the image's pixels pooled to each layer's stride.

    Images keep their size (``ratio`` 1); the CAM, when asked for, is all ones.
    """

    def __init__(self, backbone: str = "resnet50") -> None:
        self.backbone = backbone
        self.specs = layer_specs(backbone)
        self.paths: list[Path] = []

    def get(self, path: Path, layer_ids: tuple[int, ...], *, need_cam: bool) -> ImageFeatures:
        self.paths.append(Path(path))
        img = load_image(Path(path)).float() / 255.0  # [3 x H x W]
        H, W = int(img.shape[1]), int(img.shape[2])
        # Centred colours carry the pattern; raw ones would all look alike to a cosine.
        img = img - img.mean(dim=(1, 2), keepdim=True)
        layers = {}
        for l in layer_ids:
            s = self.specs[l].stride
            h, w = math.ceil(H / s), math.ceil(W / s)
            pooled = F.adaptive_avg_pool2d(img.unsqueeze(0), (h, w))[0]
            layers[l] = torch.cat([pooled, pooled.roll(1, dims=2) - pooled])
        cam = torch.ones(H, W) if need_cam else None
        return ImageFeatures(layers=layers, image_size=(H, W), ratio=1.0, orig_size=(H, W),
                             cam=cam)

    def describe(self) -> dict[str, str]:
        return {"backbone": self.backbone, "weights": "pixels", "weights_digest": "pixels"}
