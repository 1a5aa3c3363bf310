"""Entropic optimal transport by Sinkhorn iterations (SCOT's Algorithm 1), batched."""

from __future__ import annotations

import warnings

import torch


#: Below this eps, ``auto`` switches to the log domain: with costs in [0, 1] the Gibbs
#: kernel ``exp(-M / eps)`` falls under float32's normal range near eps = 1/87.
LOG_DOMAIN_EPS = 0.02


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``num > 0``, else 0 (den clamped to the smallest normal)."""
    # 0 where the numerator (a marginal) is 0: padded or zero-weight hyperpixels stay empty
    # instead of becoming 0/0.
    tiny = torch.finfo(den.dtype).tiny
    return torch.where(num > 0, num / den.clamp_min(tiny), torch.zeros_like(num))


def sinkhorn(
    M: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    *,
    eps: float,
    n_iter: int = 1,
    method: str = "auto",
    tol: float | None = None,
    a0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Transport plan ``T = diag(a) K diag(b)`` with ``K = exp(-M / eps)``.

    Each iteration updates ``b = nu / (K^T a)`` then ``a = mu / (K b)``, so after any number
    of iterations the row sums equal ``mu`` exactly; with enough iterations the column sums
    converge to ``nu``. ``n_iter=1`` starting from ``a0 = 1/n`` is exactly SCOT's code, which
    calls its Sinkhorn with the default of one iteration (reference-behaviour.md §3.2); the
    paper's Algorithm 1 runs up to 50.

    Args:
        M: ``[... x n x m]`` cost.
        mu: ``[... x n]`` source marginal (zeros mark absent hyperpixels, e.g. padding).
        nu: ``[... x m]`` target marginal.
        eps: entropic regularisation (> 0).
        n_iter: iterations (>= 1).
        method: ``standard``, ``log`` (log-domain, stable for small eps) or ``auto``.
        tol: stop early once the L1 column-marginal error of every batch element is below
            ``tol`` (checked every 10 iterations); ``None`` runs all ``n_iter``.
        a0: ``[... x n]`` starting row scaling; default ``1/n`` over rows with ``mu > 0``.

    Returns:
        ``[... x n x m]`` plan in M's dtype (computed in at least float32). Never NaN: the
        standard path doubles eps for a batch element whose plan is not finite, as SCOT does,
        and warns.

    Examples:
        >>> M = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> T = sinkhorn(M, torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), eps=0.1, n_iter=20)
        >>> [round(v, 4) for v in T.sum(1).tolist()], [round(v, 4) for v in T.sum(0).tolist()]
        ([0.5, 0.5], [0.5, 0.5])
    """
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    if method not in ("auto", "standard", "log"):
        raise ValueError(f"unknown Sinkhorn method {method!r}")
    out_dtype = M.dtype
    work = torch.promote_types(M.dtype, torch.float32)
    M, mu, nu = M.to(work), mu.to(work), nu.to(work)
    if a0 is None:
        rows = (mu > 0).to(work)
        a0 = rows / rows.sum(-1, keepdim=True).clamp_min(1)
    else:
        a0 = a0.to(work)
    if method == "log" or (method == "auto" and eps < LOG_DOMAIN_EPS):
        return _sinkhorn_log(M, mu, nu, eps, n_iter, tol, a0).to(out_dtype)
    T = _sinkhorn_standard(M, mu, nu, eps, n_iter, tol, a0)
    bad = ~torch.isfinite(T).flatten(-2).all(-1)
    if bad.any():
        # SCOT doubles eps and solves again when its plan holds NaN (§3.2 step 6).
        warnings.warn(
            f"Sinkhorn plan not finite at eps={eps}; retrying those elements with eps={2 * eps}",
            RuntimeWarning,
            stacklevel=2,
        )
        retry = sinkhorn(
            M[bad], mu[bad], nu[bad], eps=2 * eps, n_iter=n_iter, method=method, tol=tol,
            a0=a0[bad],
        )
        T[bad] = retry.to(work)
    return T.to(out_dtype)


def sinkhorn_kernel_(
    K: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    *,
    n_iter: int = 1,
    tol: float | None = None,
    a0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Like :func:`sinkhorn` but from the Gibbs kernel ``K`` (float32), overwritten in place
    with the plan. For the search's hot path, where K is built in place from the cosine."""
    if a0 is None:
        rows = (mu > 0).to(K.dtype)
        a0 = rows / rows.sum(-1, keepdim=True).clamp_min(1)
    return _sinkhorn_standard(K, mu.to(K.dtype), nu.to(K.dtype), None, n_iter, tol, a0)


def _sinkhorn_standard(
    K: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    eps: float | None,
    n_iter: int,
    tol: float | None,
    a0: torch.Tensor,
) -> torch.Tensor:
    # K is either the cost (eps given) or already the Gibbs kernel (eps None, in place).
    K = torch.exp(-K / eps) if eps is not None else K
    a = a0
    for it in range(n_iter):
        b = safe_div(nu, (K.transpose(-1, -2) @ a.unsqueeze(-1)).squeeze(-1))
        a = safe_div(mu, (K @ b.unsqueeze(-1)).squeeze(-1))
        if tol is not None and (it + 1) % 10 == 0:
            col = (a.unsqueeze(-2) @ K).squeeze(-2) * b
            if ((col - nu).abs().sum(-1) < tol).all():
                break
    # The plan in O(nm): a[:, None] * K * b[None, :] instead of the reference's two dense
    # diag() products (§3.2 implementation note).
    K.mul_(a.unsqueeze(-1)).mul_(b.unsqueeze(-2))
    return K


def _sinkhorn_log(
    M: torch.Tensor,
    mu: torch.Tensor,
    nu: torch.Tensor,
    eps: float,
    n_iter: int,
    tol: float | None,
    a0: torch.Tensor,
) -> torch.Tensor:
    neg_inf = torch.tensor(float("-inf"), dtype=M.dtype, device=M.device)
    logK = -M / eps
    log_mu = torch.where(mu > 0, mu.log(), neg_inf)
    log_nu = torch.where(nu > 0, nu.log(), neg_inf)
    f = torch.where(a0 > 0, a0.log(), neg_inf)
    g = log_nu
    for it in range(n_iter):
        lse_c = torch.logsumexp(logK + f.unsqueeze(-1), dim=-2)
        g = torch.where(nu > 0, log_nu - lse_c, neg_inf)
        lse_r = torch.logsumexp(logK + g.unsqueeze(-2), dim=-1)
        f = torch.where(mu > 0, log_mu - lse_r, neg_inf)
        if tol is not None and (it + 1) % 10 == 0:
            col = torch.exp(torch.logsumexp(logK + f.unsqueeze(-1), dim=-2) + g)
            if ((col - nu).abs().sum(-1) < tol).all():
                break
    T = torch.exp(logK + f.unsqueeze(-1) + g.unsqueeze(-2))
    return torch.nan_to_num(T, nan=0.0)
