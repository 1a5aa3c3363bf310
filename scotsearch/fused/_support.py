"""Which settings and devices the fused chain covers."""

from __future__ import annotations

import torch

from scotsearch.config import MatchConfig
from scotsearch.ot import LOG_DOMAIN_EPS


def available(device: torch.device | None = None) -> str | None:
    """``None`` when the fused chain can run on ``device`` (default: the CPU), else why not.

    The CPU chain's kernels are numba's; on a CUDA device they are Triton's.
    """
    if device is not None and device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return f"the fused GPU kernels need Triton, which cannot be imported ({exc})"
        return None
    try:
        import numba  # noqa: F401
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        return f"numba cannot be imported ({exc})"
    return None


def supports(match: MatchConfig, device: torch.device, term_dtype: torch.dtype) -> str | None:
    """``None`` when the fused chain computes these settings, else why it does not."""
    if device.type not in ("cpu", "cuda"):
        return f"the fused kernels run on the CPU and on CUDA GPUs, not on {device.type}"
    if term_dtype != torch.float32:
        return "the fused chain computes in float32 only"
    if match.similarity == "ot" and match.eps < LOG_DOMAIN_EPS:
        return f"eps below {LOG_DOMAIN_EPS} needs the log-domain Sinkhorn of the eager chain"
    return available(device)
