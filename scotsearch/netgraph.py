"""Candidate layers of any network, with strides and receptive fields computed from its graph.

A *candidate layer* is the output of one block: every module whose class name says it is a
residual / transformer block (:data:`BLOCK_CLASS`) and that sits inside no other such module,
plus the stem (the input of the first block) for networks whose first block sees a feature
map rather than tokens. They are numbered 0..L-1 in the order the forward pass produces them.

Strides and receptive fields are not tabled: one forward pass on the ``meta`` device (shapes
only, no arithmetic) runs under :class:`_FieldMode`, a ``TorchFunctionMode`` that follows
every tensor from the image to the block outputs and carries, per tensor, the receptive-field
size ``rf`` and the jump ``j`` (input pixels between neighbouring cells). The rules:

* convolution ``k`` (dilation ``d``, stride ``s``): ``rf += (k - 1) * d * j``, ``j *= s``;
  max/avg pooling likewise (the classic receptive-field arithmetic);
* interpolation: ``j`` scaled by the size ratio;
* attention (``scaled_dot_product_attention``, a product of two image-derived tensors),
  reductions over all positions (``mean((2, 3))``, adaptive pooling to fewer cells, group
  norm): the field becomes the whole image (``rf = inf``);
* anything else (element-wise ops, linear layers, norms over channels, reshapes,
  concatenation, the residual add): the largest ``rf`` and ``j`` of its image-derived inputs.

Kernels are taken as square (the larger side counts). For ResNets this reproduces the
references' table (11, 19, 27, 35, 43, 59, 75, 91, 107, 139 for ids 0..9).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary


#: Class names of the modules whose outputs are candidate layers.
BLOCK_CLASS = re.compile(
    r"(Block|Bottleneck|BasicBlock|InvertedResidual|MBConv|DepthwiseSeparableConv|EdgeResidual)$"
)

_CONV = {"conv2d", "conv_transpose2d"}
_POOL = {"max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "_max_pool2d"}
_ADAPTIVE = {"adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"}
_GLOBAL = {"scaled_dot_product_attention", "group_norm", "instance_norm"}
_PRODUCT = {"matmul", "bmm", "baddbmm", "einsum", "__matmul__", "__rmatmul__"}
_REDUCE = {"mean", "sum", "amax", "amin", "std", "var", "logsumexp", "max", "min", "norm"}


@dataclass(frozen=True)
class Field:
    """Receptive field of a tensor: ``rf`` pixels wide (``inf``: the whole image), cells
    ``jump`` pixels apart."""

    rf: float
    jump: float


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], pos: int, name: str, default: Any) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[pos] if len(args) > pos else default


def _reduces_positions(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A reduction over every position of its tensor: all dims, spatial (2, 3) of a 4-D
    map, or the token dim 1 of a 3-D sequence."""
    x = args[0] if args else None
    # torch.norm(x, p, dim): the dim comes third
    dim = _arg(args, kwargs, 2 if name == "norm" else 1, "dim", None)
    if not isinstance(x, torch.Tensor) or isinstance(dim, torch.Tensor):
        return False  # not a reduction of one tensor (e.g. max(a, b), element-wise)
    if dim is None:
        return True
    dims = {int(d) % x.dim() for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
    if x.dim() == 4:
        return {2, 3} <= dims or {1, 2} <= dims
    return x.dim() == 3 and 1 in dims


class _FieldMode(TorchFunctionMode):
    """Carries a :class:`Field` along every tensor derived from the image (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: WeakTensorKeyDictionary = WeakTensorKeyDictionary()

    def field(self, t: torch.Tensor) -> Field | None:
        f = self.fields.get(t)
        return f if isinstance(f, Field) else None

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [f for t in _tensors((args, kwargs)) if (f := self.field(t)) is not None]
        if not ins:
            return out
        name = getattr(func, "__name__", "")
        first = self.field(args[0]) if args and isinstance(args[0], torch.Tensor) else None
        res = Field(max(f.rf for f in ins), max(f.jump for f in ins))
        if name in _CONV and first is not None:
            k = max(_pair(args[1].shape[-2:]))
            s = _pair(_arg(args, kwargs, 3, "stride", 1))[0]
            d = _pair(_arg(args, kwargs, 5 if name == "conv2d" else 7, "dilation", 1))[0]
            if name == "conv2d":
                res = Field(first.rf + (k - 1) * d * first.jump, first.jump * s)
            else:  # transposed: upsamples by s
                res = Field(first.rf + (k - 1) * d * first.jump / s, first.jump / s)
        elif name in _POOL and first is not None:
            k = max(_pair(_arg(args, kwargs, 1, "kernel_size", 1)))
            stride = _arg(args, kwargs, 2, "stride", None)
            s = _pair(stride if stride not in (None, []) else k)[0]
            d = _pair(_arg(args, kwargs, 4, "dilation", 1))[0] if "max" in name else 1
            res = Field(first.rf + (k - 1) * d * first.jump, first.jump * s)
        elif name in _ADAPTIVE and first is not None:
            o = next(_tensors(out))
            if tuple(o.shape[-2:]) != tuple(args[0].shape[-2:]):
                res = Field(math.inf, first.jump)
        elif name == "interpolate" and first is not None:
            o = next(_tensors(out))
            res = Field(first.rf, first.jump * args[0].shape[-1] / o.shape[-1])
        elif name in _GLOBAL:
            res = Field(math.inf, res.jump)
        elif name in _PRODUCT and len(ins) >= 2:
            res = Field(math.inf, res.jump)
        elif name in _REDUCE and _reduces_positions(name, args, kwargs):
            res = Field(math.inf, res.jump)
        for t in _tensors(out):
            self.fields[t] = res
        return out


@dataclass(frozen=True)
class TracedLayer:
    """One candidate layer as a forward pass saw it.

    Attributes:
        name: module path (``stages.1.blocks.0``; ``<stem>`` for the first block's input).
        shape: the raw output shape (batch first).
        field: its receptive field and jump.
    """

    name: str
    shape: tuple[int, ...]
    field: Field


def block_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost modules whose class name matches :data:`BLOCK_CLASS`, in registration
    order (the forward order is taken from a pass, see :func:`trace_layers`)."""
    found: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p in inside):
            continue
        if BLOCK_CLASS.search(type(mod).__name__):
            found.append((name, mod))
            inside.append(name)
    return found


@contextmanager
def _hooks(model: nn.Module, blocks: list[tuple[str, nn.Module]],
           sink: Callable[[str, Any], None]) -> Iterator[None]:
    handles = []
    first = True
    for name, mod in blocks:
        if first:
            handles.append(mod.register_forward_pre_hook(
                lambda _m, a: sink("<stem>", a[0]) if a else None))
            first = False
        handles.append(mod.register_forward_hook(
            lambda _m, _a, out, name=name: sink(name, out)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Done(Exception):
    """Raised by a hook once every wanted output is in: the rest of the pass is not needed."""


def run_collecting(
    model: nn.Module, x: torch.Tensor, blocks: list[tuple[str, nn.Module]],
    wanted: set[str], *, stop_early: bool,
) -> tuple[dict[str, torch.Tensor], Any]:
    """Run ``model(x)`` and keep the raw outputs of the ``wanted`` blocks (and stem), by name.

    Args:
        stop_early: end the pass as soon as every wanted output is in (the result is then
            ``None``).

    Returns:
        ``(outputs, result)``: block name -> first output tensor, and the model's result.
    """
    seen: dict[str, torch.Tensor] = {}

    def sink(name: str, out: Any) -> None:
        if name in wanted and name not in seen:
            t = next(_tensors(out), None)
            if t is not None:
                seen[name] = t
        if stop_early and len(seen) == len(wanted):
            raise _Done

    if stop_early and not wanted:
        return seen, None
    try:
        with _hooks(model, blocks, sink):
            result = model(x)
    except _Done:
        result = None
    return seen, result


def trace_layers(model: nn.Module, side: int = 224) -> list[TracedLayer]:
    """Every block output (and the stem) in forward order, with its shape and field.

    Args:
        model: the network (moved to the ``meta`` device for the pass, so no arithmetic runs;
            a network already on ``meta`` is used as it is).
        side: image side of the square ``meta`` input.
    """
    meta = model if _is_meta(model) else _to_meta(model)
    blocks = block_modules(meta)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no module recognised as a block")
    mode = _FieldMode()
    order: list[TracedLayer] = []

    def sink(name: str, out: Any) -> None:
        t = next(_tensors(out), None)
        if t is None or any(o.name == name for o in order):
            return
        f = mode.field(t)
        if f is None:
            raise ValueError(f"cannot follow the image into {name!r}")
        order.append(TracedLayer(name, tuple(int(s) for s in t.shape), f))

    x = torch.empty(1, 3, side, side, device="meta")
    with torch.no_grad(), _hooks(meta, blocks, sink), mode:
        mode.fields[x] = Field(1.0, 1.0)
        meta(x)
    return order


def _is_meta(model: nn.Module) -> bool:
    p = next(model.parameters(), None)
    return p is not None and p.device.type == "meta"


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("meta")
