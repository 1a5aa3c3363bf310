"""Middlebury ``.flo`` optical-flow files: the ground truth of TSS and the files SCOT writes.

Layout (Middlebury flow format, as SCOT's ``data/flow.py`` reads and writes it):
a float32 magic number 202021.25, int32 width, int32 height, then ``height * width * 2``
float32 values, row-major, ``(u, v)`` interleaved per pixel. All little-endian (the files are
written on x86; we fix the byte order so a big-endian machine reads them the same).

Reading is strict where SCOT's reader is lenient: a short file would be padded silently by
``np.resize`` there; here it is an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scotsearch._io import atomic_write
from scotsearch.errors import DataError


#: The format's tag: the float32 bytes spell "PIEH" in ASCII.
FLO_MAGIC = 202021.25

#: Middlebury's "unknown flow" convention: components above this are not ground truth.
UNKNOWN_FLOW = 1e9

_HEADER = np.dtype([("magic", "<f4"), ("w", "<i4"), ("h", "<i4")])


def read_flo(path: Path) -> np.ndarray:
    """Read a ``.flo`` file.

    Returns:
        ``[H x W x 2]`` float32 flow ``(u, v)`` per pixel.

    Raises:
        DataError: the file is missing, has the wrong magic number, impossible dimensions,
            or fewer / more bytes than its header announces.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"flow file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read flow file {path}: {e}") from e
    w, h = _check_header(path, raw, len(raw))
    data = np.frombuffer(raw[_HEADER.itemsize :], dtype="<f4")
    return data.reshape(h, w, 2).astype(np.float32)


def check_flo_header(path: Path) -> tuple[int, int]:
    """``(W, H)`` of a ``.flo`` file from its header, checking magic and length (no data read).

    Raises:
        DataError: as :func:`read_flo`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"flow file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER.itemsize)
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read flow file {path}: {e}") from e
    return _check_header(path, raw, size)


def _check_header(path: Path, raw: bytes, size: int) -> tuple[int, int]:
    if len(raw) < _HEADER.itemsize:
        raise DataError(f"flow file {path} is too short for a .flo header ({size} bytes)")
    head = np.frombuffer(raw[: _HEADER.itemsize], dtype=_HEADER)[0]
    if float(head["magic"]) != FLO_MAGIC:
        raise DataError(
            f"flow file {path} is not a Middlebury .flo file (magic {float(head['magic']):g}, "
            f"expected {FLO_MAGIC})"
        )
    w, h = int(head["w"]), int(head["h"])
    if w < 1 or h < 1:
        raise DataError(f"flow file {path} announces an empty {w}x{h} flow")
    expected = _HEADER.itemsize + 4 * 2 * w * h
    if size != expected:
        raise DataError(f"flow file {path} has {size} bytes; a {w}x{h} flow needs {expected}")
    return w, h


def encode_flo(flow: np.ndarray) -> bytes:
    """The bytes of a ``.flo`` file holding ``flow`` (``[H x W x 2]``, cast to float32)."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] < 1 or flow.shape[1] < 1:
        raise ValueError(f"flow must be H x W x 2 with H, W >= 1, got shape {flow.shape}")
    h, w = flow.shape[:2]
    head = np.array([(FLO_MAGIC, w, h)], dtype=_HEADER)
    return head.tobytes() + np.ascontiguousarray(flow, dtype="<f4").tobytes()


def write_flo(path: Path, flow: np.ndarray) -> None:
    """Write ``flow`` as a ``.flo`` file, creating its folder; atomic (never half-written)."""
    atomic_write(Path(path), encode_flo(flow), fsync=False)
