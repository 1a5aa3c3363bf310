"""On-disk format of the feature cache: the layout's names, the keys, the entry files.

Every name of the layout is spelled here and nowhere else; the other cache modules build
paths with the functions below. Layout (ecosystem.md §3.3)::

    <cache_dir>/features/weights.json                     weights identity -> digest records
    <cache_dir>/features/<key[:16]>/manifest.json         full key fields of the folder
    <cache_dir>/features/<key[:16]>/<sha[:2]>/<sha>.safetensors   one entry per image

``cache_dir`` is the folder the user passes (``--cache-dir``); ``features_dir`` is its
``features`` sub-folder; a *key folder* is ``features_dir/<key[:16]>``. Temporary files
(``.<name>.<host>.<pid>.<random>.tmp``, :mod:`scotsearch._io`) sit next to what they replace.

An entry is one safetensors file per image (``sha`` = SHA-256 of the image file bytes)
holding a float16 tensor ``layer_NN`` per layer id at its native resolution and the float32
``cam``. Its string metadata repeats the key, the image digest, the sizes, the resize ratio,
a CRC-32 per tensor and a per-layer power-of-two exponent (see :func:`encode_layer`).

Why safetensors per image (measured by ``benchmarks/bench_cache.py``): one file per image
instead of one per (image, layer) keeps the file count at the image count; ``safe_open`` is
memory-mapped, so reading one layer touches only that layer's bytes; the header is checked
against the file length on open, so a truncated file never reads as valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import cast

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save as st_save

from scotsearch.cam import CAM_SCALES
from scotsearch.config import Profile
from scotsearch.features import ImageFeatures
from scotsearch.layers import n_layers
from scotsearch.preprocess import IMAGENET_MEAN
from scotsearch.preprocess import IMAGENET_STD
from scotsearch.zoo import is_zoo
from scotsearch.zoo import net_info


#: Bump whenever extraction, preprocessing or the entry layout changes meaning: every old
#: entry then becomes a miss (and ``cache --prune`` removes it).
FEATURE_SCHEMA_VERSION = 2  # 2: entry metadata under its own CRC

#: Which network node each layer id reads (reference-behaviour.md §1.2); part of the key.
LAYER_SCHEME = (
    "hpf-resnet: id 0 = stem after max-pool; id k >= 1 = k-th bottleneck over layer1..layer4, "
    "after the residual add and before its ReLU"
)

#: The layer scheme of zoo backbones (timm:, torchvision:, fcn-resnet101).
ZOO_LAYER_SCHEME = (
    "blocks: every block output in forward order (the stem first when it is a map); ViT "
    "patch tokens reshaped to the patch grid, prefix tokens dropped"
)

#: The ``format`` field of every entry's metadata.
FORMAT_NAME = "scotsearch-features"
#: Largest finite float16.
FP16_MAX = 65504.0

#: Sub-folder of ``--cache-dir`` holding the features (``cache/`` also holds the demo data).
FEATURES_DIR = "features"
#: The weights digest book (:class:`~scotsearch.cache.DigestBook`) in the features folder.
DIGESTS_FILE = "weights.json"
#: A key folder's full key fields, versions and the weights spellings seen, as JSON.
MANIFEST = "manifest.json"
#: Suffix of an entry file (its stem is the image digest).
ENTRY_SUFFIX = ".safetensors"
#: Hex digits of the key digest naming its folder (the full digest is checked on reads).
KEY_FOLDER_DIGITS = 16
#: Hex digits of the image digest naming the sub-folder of its entry.
SHARD_DIGITS = 2


# -------------------------------------------------------------------------------- layout
def features_dir_of(cache_dir: Path) -> Path:
    """The features folder of the cache folder ``cache_dir`` (``--cache-dir``)."""
    return Path(cache_dir) / FEATURES_DIR


def digests_path(features_dir: Path) -> Path:
    """The weights digest book of a features folder."""
    return Path(features_dir) / DIGESTS_FILE


def key_folder_name(digest: str) -> str:
    """Name of the key folder of a full key digest."""
    return digest[:KEY_FOLDER_DIGITS]


def key_folders(features_dir: Path) -> list[Path]:
    """The key folders of a features folder, sorted (hidden names are not key folders)."""
    if not features_dir.is_dir():
        return []
    return sorted(p for p in features_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def manifest_path(folder: Path) -> Path:
    """The manifest of a key folder."""
    return folder / MANIFEST


def entry_path(folder: Path, image_sha: str) -> Path:
    """Entry file of an image (by the SHA-256 of its bytes) in a key folder."""
    return folder / image_sha[:SHARD_DIGITS] / f"{image_sha}{ENTRY_SUFFIX}"


def entry_files(folder: Path) -> list[Path]:
    """The entry files of a key folder, sorted."""
    return sorted(folder.glob(f"{'?' * SHARD_DIGITS}/*{ENTRY_SUFFIX}"))


def entry_sha(path: Path) -> str:
    """The image digest an entry file is named after."""
    return path.name[: -len(ENTRY_SUFFIX)]


def in_its_shard(path: Path) -> bool:
    """The entry file sits in the sub-folder its image digest names."""
    return path.parent.name == entry_sha(path)[:SHARD_DIGITS]


# ---------------------------------------------------------------------------------- keys
def canonical_json(obj: Any) -> str:
    """Sorted-key, whitespace-free JSON: the byte string a key digest is taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class CacheKey:
    """The extractor key: everything that changes stored values, except the image.

    Attributes:
        fields: the key fields (see :func:`key_fields`).
        digest: SHA-256 hex of their canonical JSON.
    """

    fields: dict[str, Any]
    digest: str

    @property
    def short(self) -> str:
        """Folder name: the first 16 hex digits (the full digest is checked on every read)."""
        return key_folder_name(self.digest)

    @property
    def backbone(self) -> str:
        """The backbone name the key was made for."""
        return str(self.fields["backbone"])


def key_fields(backbone: str, weights_digest: str, profile: Profile) -> dict[str, Any]:
    """The fields of the extractor key.

    The weights enter by content digest only (never by a symbolic name such as
    ``IMAGENET1K_V1``, ecosystem.md §3.3), so two spellings of the same weights share
    entries and changed weights under the same name never hit. The whole profile, its name
    (the compat mode) included, is part of the key as the issue asks, although only
    ``image_side`` and ``upsample_small`` change the stored maps.
    """
    fields: dict[str, Any] = {
        "schema": FEATURE_SCHEMA_VERSION,
        "backbone": backbone,
        "weights_digest": weights_digest,
        "layer_scheme": LAYER_SCHEME,
        "n_layers": n_layers(backbone),
        "compat": profile.name,
        "profile": dataclasses.asdict(profile),
        "preprocess": {
            "decode": "PIL convert RGB, no EXIF transpose",
            "normalise": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "order": "scale to [0,1], normalise, then resize",
            "resize": "bilinear, align_corners=False, float32 ratio arithmetic",
        },
        "cam": {"scales": list(CAM_SCALES), "top_k": 2, "stored": "raw, before any staircase"},
        "storage": {"layers": "float16 x 2^exponent per layer", "cam": "float32"},
    }
    if is_zoo(backbone):
        # Another layer scheme, the model's own normalisation, the ViT patch padding and
        # the foreground map it gives (zoo.NetInfo.describe); ResNet keys are unchanged.
        info = net_info(backbone)
        fields["layer_scheme"] = ZOO_LAYER_SCHEME
        fields["network"] = info.describe()
        fields["preprocess"]["normalise"] = {"mean": list(info.mean), "std": list(info.std)}
        fields["preprocess"]["pad"] = f"zeros bottom/right to a multiple of {info.multiple}"
        if info.marginal != "cam":
            fields["cam"] = {"stored": info.marginal or "none"}
    return fields


def make_key(backbone: str, weights_digest: str, profile: Profile) -> CacheKey:
    """The extractor key of a backbone, its weights (by digest) and a profile."""
    return key_from_fields(key_fields(backbone, weights_digest, profile))


def key_from_fields(fields: dict[str, Any]) -> CacheKey:
    """The key a folder's manifest describes (digest recomputed from the stored fields)."""
    digest = hashlib.sha256(canonical_json(fields).encode()).hexdigest()
    return CacheKey(fields=fields, digest=digest)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes (the image part of an entry's identity)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


# -------------------------------------------------------------------------------- entries
class EntryError(Exception):
    """An entry file exists but is not a valid entry for the expected key and image."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def layer_name(layer_id: int) -> str:
    """Name of a layer's tensor in an entry."""
    return f"layer_{layer_id:02d}"


def _crc(t: torch.Tensor) -> int:
    # zlib.crc32 runs at several GB/s and releases the GIL, so checking every read costs
    # a few ms per image: cheap next to matching.
    return zlib.crc32(t.contiguous().view(torch.uint8).reshape(-1).numpy().data)


def encode_layer(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Float16 storage of a float32 map, with a power-of-two exponent against overflow.

    ImageNet-trained ResNets stay far inside the float16 range, but randomly initialised
    ones (used offline and in tests) reach 2e5 in deep layers. Dividing by ``2**k`` is exact
    in binary floating point, so the smallest ``k >= 0`` that makes every value finite keeps
    float16 precision (10 bits) at any magnitude; ``k`` is 0 for pretrained networks.

    Returns:
        ``(stored, k)``: the float16 tensor and the exponent.

    Raises:
        ValueError: the map has non-finite values.
    """
    x = x.detach().to("cpu", torch.float32)
    peak = float(x.abs().max()) if x.numel() else 0.0
    if not math.isfinite(peak):
        raise ValueError("feature map has non-finite values")
    k = max(0, math.ceil(math.log2(peak / FP16_MAX))) if peak > FP16_MAX else 0
    while True:
        stored = (x * 2.0**-k if k else x).to(torch.float16)
        if bool(torch.isfinite(stored).all()):
            return stored.contiguous(), k
        k += 1  # rounding up to inf just below the limit: one more halving always suffices


def decode_layer(stored: torch.Tensor, k: int) -> torch.Tensor:
    """The map as read back: float16 when ``k == 0``, else exactly ``stored * 2**k`` (float32)."""
    return stored if k == 0 else stored.to(torch.float32) * 2.0**k


def _hw(size: Iterable[int]) -> tuple[int, int]:
    # A plain tuple of whatever sequence a source put there (a list, a torch.Size); that it
    # is an (H, W) pair is ImageFeatures' contract, not checked again here.
    return cast("tuple[int, int]", tuple(size))


def roundtrip(feats: ImageFeatures) -> ImageFeatures:
    """The features exactly as an entry would return them (float16 rounding applied).

    Used by the in-memory source and right after a build, so cached and uncached runs
    see identical values.
    """
    layers = {l: decode_layer(*encode_layer(v)) for l, v in feats.layers.items()}
    cam = None if feats.cam is None else feats.cam.detach().to("cpu", torch.float32).contiguous()
    return ImageFeatures(layers=layers, image_size=_hw(feats.image_size),
                         ratio=float(feats.ratio), orig_size=_hw(feats.orig_size), cam=cam)


def encode_entry(
    feats: ImageFeatures, key: CacheKey, image_sha: str, *, source: str = ""
) -> tuple[bytes, ImageFeatures]:
    """Serialise a complete entry (all layers and the CAM).

    Returns:
        ``(data, decoded)``: the safetensors bytes and the features as a read will return them.

    Raises:
        ValueError: layers missing, CAM missing, or non-finite values.
    """
    n = int(key.fields["n_layers"])
    if sorted(feats.layers) != list(range(n)):
        raise ValueError(f"an entry needs all {n} layers, got {sorted(feats.layers)}")
    tensors: dict[str, torch.Tensor] = {}
    cam = None
    if feats.cam is not None:
        cam = feats.cam.detach().to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(cam).all()):
            raise ValueError("CAM has non-finite values")
        tensors["cam"] = cam
    elif key.fields.get("cam", {}).get("stored") != "none":
        # Only a backbone without a foreground map (a ViT) writes entries without one.
        raise ValueError("an entry needs the CAM")
    exponents: dict[str, int] = {}
    decoded: dict[int, torch.Tensor] = {}
    for l in range(n):
        stored, k = encode_layer(feats.layers[l])
        tensors[layer_name(l)] = stored
        exponents[str(l)] = k
        decoded[l] = decode_layer(stored, k)
    meta = {
        "format": FORMAT_NAME,
        "schema": str(FEATURE_SCHEMA_VERSION),
        "key": key.digest,
        "image_sha256": image_sha,
        "image_size": ",".join(map(str, feats.image_size)),
        "orig_size": ",".join(map(str, feats.orig_size)),
        "ratio": repr(float(feats.ratio)),
        "n_layers": str(n),
        "exponents": canonical_json(exponents),
        "checksums": canonical_json({name: _crc(t) for name, t in tensors.items()}),
        "source": source,
    }
    meta[META_CRC] = str(_meta_crc(meta))
    out = ImageFeatures(layers=decoded, image_size=_hw(feats.image_size),
                        ratio=float(feats.ratio), orig_size=_hw(feats.orig_size), cam=cam)
    return st_save(tensors, metadata=meta), out


#: Metadata field holding the CRC-32 of every other metadata field. The ratio, the sizes
#: and the exponents change results as much as the tensors do: one digit of the ratio
#: changed gave PCK 0 instead of 89.47, silently, before schema 2 covered them.
META_CRC = "meta_crc32"


def _meta_crc(meta: dict[str, str]) -> int:
    rest = {k: v for k, v in meta.items() if k != META_CRC}
    return zlib.crc32(canonical_json(rest).encode())


def _check_meta(path: Path, meta: dict[str, str]) -> None:
    if meta.get(META_CRC) != str(_meta_crc(meta)):
        raise EntryError(path, "metadata checksum mismatch (sizes, ratio or exponents damaged)")


def _pair(text: str) -> tuple[int, int]:
    a, b = text.split(",")
    return int(a), int(b)


def read_entry(
    path: Path,
    *,
    key: str | None,
    image_sha: str | None,
    layer_ids: Iterable[int] | None,
    need_cam: bool,
    check: bool = True,
    checked: set[str] | None = None,
) -> ImageFeatures:
    """Read the requested parts of an entry, checking them.

    Only the requested tensors are read: ``safe_open`` maps the file and ``get_tensor``
    copies just that tensor's byte range. The header is validated against the file length
    on open (a truncated file fails there); each tensor read is checked against its CRC-32.

    Args:
        path: the entry file.
        key: expected full key digest (``None``: take the file's).
        image_sha: expected image digest (``None``: take the file's).
        layer_ids: layers to read (``None``: all).
        need_cam: read the CAM too.
        check: verify the CRC of each tensor read.
        checked: names of tensors of this file already verified (their CRC is skipped);
            tensors verified now are added. A search reads each entry many times: checking
            it once per process keeps the CRC off the hot path.

    Raises:
        FileNotFoundError: no such file.
        EntryError: anything else wrong with the file.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT_NAME:
                raise EntryError(path, "not a scotsearch feature entry")
            if meta.get("schema") != str(FEATURE_SCHEMA_VERSION):
                raise EntryError(
                    path, f"schema {meta.get('schema')} != {FEATURE_SCHEMA_VERSION}")
            if key is not None and meta.get("key") != key:
                raise EntryError(path, "written for another cache key")
            if image_sha is not None and meta.get("image_sha256") != image_sha:
                raise EntryError(path, "written for another image")
            _check_meta(path, meta)  # always: a header's CRC costs nothing
            n = int(meta["n_layers"])
            exponents = json.loads(meta["exponents"])
            sums = json.loads(meta["checksums"]) if check else {}
            names = set(fh.keys())
            ids = range(n) if layer_ids is None else [int(i) for i in layer_ids]
            # An entry of a backbone without a foreground map has no CAM (and no checksum
            # for one): it reads as cam None; a CAM that was written and is gone is damage.
            has_cam = "cam" in json.loads(meta["checksums"])
            wanted = [(layer_name(i), i) for i in ids] + (
                [("cam", -1)] if need_cam and has_cam else [])
            layers: dict[int, torch.Tensor] = {}
            cam = None
            for name, i in wanted:
                if name not in names:
                    raise EntryError(path, f"tensor {name} is missing")
                t = fh.get_tensor(name)
                if check and (checked is None or name not in checked):
                    if _crc(t) != int(sums[name]):
                        raise EntryError(path, f"checksum mismatch in {name}")
                    if checked is not None:
                        checked.add(name)
                if i < 0:
                    cam = t
                else:
                    layers[i] = decode_layer(t, int(exponents[str(i)]))
            return ImageFeatures(
                layers=layers,
                image_size=_pair(meta["image_size"]),
                ratio=float(meta["ratio"]),
                orig_size=_pair(meta["orig_size"]),
                cam=cam,
            )
    except FileNotFoundError:
        raise
    except EntryError:
        raise
    except (SafetensorError, OSError, KeyError, ValueError, TypeError,
            json.JSONDecodeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EntryError(path, f"unreadable ({reason})") from exc


def entry_metadata(path: Path) -> dict[str, str]:
    """The header metadata of an entry (opening checks the header against the file length)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return dict(fh.metadata() or {})
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError) as exc:
        raise EntryError(path, f"unreadable ({' '.join(str(exc).split())})") from exc


def quick_check(path: Path, key: str, image_sha: str | None = None) -> None:
    """Cheap validity check (header, length, key, image): what a re-run uses to skip work.

    Raises:
        FileNotFoundError: no entry.
        EntryError: the entry is unusable.
    """
    meta = entry_metadata(path)
    if meta.get("format") != FORMAT_NAME or meta.get("schema") != str(FEATURE_SCHEMA_VERSION):
        raise EntryError(path, "not an entry of this schema")
    if meta.get("key") != key:
        raise EntryError(path, "written for another cache key")
    if image_sha is not None and meta.get("image_sha256") != image_sha:
        raise EntryError(path, "written for another image")
    _check_meta(path, meta)
