from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from scotsearch.ot import sinkhorn


def _problem(
    n: int, m: int, seed: int = 0, batch: tuple[int, ...] = ()
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    M = torch.rand(*batch, n, m, generator=g, dtype=torch.float64)
    mu = torch.rand(*batch, n, generator=g, dtype=torch.float64) + 0.1
    nu = torch.rand(*batch, m, generator=g, dtype=torch.float64) + 0.1
    return M, mu / mu.sum(-1, keepdim=True), nu / nu.sum(-1, keepdim=True)


@pytest.mark.parametrize("n_iter", [1, 2, 7, 30])
@pytest.mark.parametrize("method", ["standard", "log"])
def test_row_sums_exact_after_any_iteration_count(n_iter: int, method: str) -> None:
    M, mu, nu = _problem(9, 13)
    T = sinkhorn(M, mu, nu, eps=0.05, n_iter=n_iter, method=method)
    torch.testing.assert_close(T.sum(-1), mu, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("method", ["standard", "log"])
def test_converged_plan_meets_both_marginals(method: str) -> None:
    M, mu, nu = _problem(12, 10, seed=1)
    T = sinkhorn(M, mu, nu, eps=0.1, n_iter=2000, method=method, tol=1e-9)
    assert (T.sum(-1) - mu).abs().max() < 1e-4
    assert (T.sum(-2) - nu).abs().max() < 1e-4


def test_one_iteration_is_scot_code_written_out() -> None:
    # SCOT's perform_sinkhorn with niter=1: a = 1/n; b = nu / (K^T a); a = mu / (K b);
    # T = diag(a) K diag(b), written here with explicit loops over entries.
    M, mu, nu = _problem(5, 4, seed=2)
    eps = 0.05
    n, m = M.shape
    K = np.exp(-M.numpy() / eps)
    a = np.full(n, 1.0 / n)
    b = np.array([nu[j].item() / sum(K[i, j] * a[i] for i in range(n)) for j in range(m)])
    a = np.array([mu[i].item() / sum(K[i, j] * b[j] for j in range(m)) for i in range(n)])
    expect = np.array([[a[i] * K[i, j] * b[j] for j in range(m)] for i in range(n)])
    T = sinkhorn(M, mu, nu, eps=eps, n_iter=1, method="standard")
    np.testing.assert_allclose(T.numpy(), expect, rtol=1e-10)


def test_log_domain_matches_standard() -> None:
    M, mu, nu = _problem(8, 11, seed=3)
    for n_iter in (1, 5, 40):
        a = sinkhorn(M, mu, nu, eps=0.05, n_iter=n_iter, method="standard")
        b = sinkhorn(M, mu, nu, eps=0.05, n_iter=n_iter, method="log")
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-14)


def test_small_eps_never_nan_in_float32() -> None:
    M, mu, nu = (t.float() for t in _problem(30, 25, seed=4))
    T = sinkhorn(M, mu, nu, eps=1e-3, n_iter=50)  # auto -> log domain
    assert torch.isfinite(T).all()
    torch.testing.assert_close(T.sum(-1), mu, atol=1e-5, rtol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T = sinkhorn(M, mu, nu, eps=1e-3, n_iter=3, method="standard")
    assert torch.isfinite(T).all()


def test_zero_marginal_entries_stay_empty_and_batch_equals_single() -> None:
    # Padding: a batch element with fewer hyperpixels is padded with zero marginals; its
    # plan must equal the unpadded problem's, padded with zeros.
    M, mu, nu = _problem(6, 5, seed=5)
    small = sinkhorn(M[:4, :3], mu[:4] / mu[:4].sum(), nu[:3] / nu[:3].sum(), eps=0.05, n_iter=3)
    mu_p = torch.cat([mu[:4] / mu[:4].sum(), torch.zeros(2, dtype=mu.dtype)])
    nu_p = torch.cat([nu[:3] / nu[:3].sum(), torch.zeros(2, dtype=nu.dtype)])
    Mb = torch.stack([M, M])
    big = sinkhorn(Mb, torch.stack([mu_p, mu]), torch.stack([nu_p, nu]), eps=0.05, n_iter=3)
    torch.testing.assert_close(big[0, :4, :3], small)
    assert big[0, 4:].abs().max() == 0 and big[0, :, 3:].abs().max() == 0
    torch.testing.assert_close(big[1], sinkhorn(M, mu, nu, eps=0.05, n_iter=3))


def test_agrees_with_pot_when_installed() -> None:
    ot = pytest.importorskip("ot")
    M, mu, nu = _problem(7, 9, seed=6)
    ours = sinkhorn(M, mu, nu, eps=0.2, n_iter=5000, tol=1e-12)
    theirs = ot.sinkhorn(mu.numpy(), nu.numpy(), M.numpy(), 0.2, numItermax=5000, stopThr=1e-12)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-8)


def test_rejects_bad_parameters() -> None:
    M, mu, nu = _problem(3, 3)
    with pytest.raises(ValueError):
        sinkhorn(M, mu, nu, eps=0.0)
    with pytest.raises(ValueError):
        sinkhorn(M, mu, nu, eps=0.1, n_iter=0)
