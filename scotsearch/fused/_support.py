"""Which settings and devices the fused chain covers."""

from __future__ import annotations

import torch

from scotsearch.config import MatchConfig
from scotsearch.ot import LOG_DOMAIN_EPS


def available() -> str | None:
    """``None`` when the fused chain can run here, else why not (one line)."""
    try:
        import numba  # noqa: F401
    except ImportError as exc:  # pragma: no cover - numba is a dependency
        return f"numba cannot be imported ({exc})"
    return None


def supports(match: MatchConfig, device: torch.device, term_dtype: torch.dtype) -> str | None:
    """``None`` when the fused chain computes these settings, else why it does not."""
    if device.type != "cpu":
        return "the fused kernels run on the CPU (the eager chain is used on other devices)"
    if term_dtype != torch.float32:
        return "the fused chain computes in float32 only"
    if match.similarity == "ot" and match.eps < LOG_DOMAIN_EPS:
        return f"eps below {LOG_DOMAIN_EPS} needs the log-domain Sinkhorn of the eager chain"
    return available()
