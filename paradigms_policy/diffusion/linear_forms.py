"""How a window's new states are assembled from one round's step outputs (shared linear algebra).

A round evaluates F_j(x_j) for the window's states at once. The next iterate keeps
some part of each step exact and lags the rest at the current states:

- cumulative (ParaDiGMS): x_{j+1} = x_begin + sum_{i<=j} (F_i(x_i) - x_i), i.e. the
  identity is exact and the whole drift lagged;
- exact-linear (ParaTAA): x_{j+1} = a_j x_j(new) + (F_j(x_j) - a_j x_j), with a_j the
  state coefficient of step j for a fixed x0 prediction (``state_coefficients``).

Both have the sequential sample as their fixed point and keep the window's first
output bit-identical to a sequential step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def transfer_matrix(a: Tensor) -> Tensor:
    """L [w,w] with L[i,k] = prod_{l=k+1..i} a_l for k <= i, else 0 (L[i,i] = 1).

    The recursion y_0 = g_0, y_i = a_i y_{i-1} + g_i is y = L g: one matmul instead
    of a Python loop over the window. Built with a cumulative product (no division,
    so a_l = 0 is fine).
    """
    w = a.shape[0]
    rows = torch.arange(w, device=a.device)
    below = rows.unsqueeze(1) > rows.unsqueeze(0)  # [i, k]: i > k
    factors = torch.where(below, a.unsqueeze(1).expand(w, w), torch.ones((), dtype=a.dtype, device=a.device))
    return torch.cumprod(factors, dim=0) * (rows.unsqueeze(1) >= rows.unsqueeze(0)).to(a.dtype)


def apply_transfer(matrix: Tensor, g: Tensor) -> Tensor:
    """matrix [w,w] @ g [w,*rest] along dim 0 (in g's dtype)."""
    w = g.shape[0]
    return (matrix.to(g.dtype) @ g.reshape(w, -1)).reshape(g.shape)


def picard_states(stepped: Tensor, window_states: Tensor, a: Tensor | None = None) -> Tensor:
    """New states x_{begin+1..begin+w} from F_j(x_j) [w,...] and the window's states x_j [w,...].

    a None: the cumulative form; a [w]: the exact-linear form (see the module docstring).
    """
    new = stepped.clone()
    if stepped.shape[0] <= 1:
        return new
    if a is None:
        new[1:] = stepped[:1] + torch.cumsum(stepped[1:] - window_states[1:], dim=0)
        return new
    shape = (-1,) + (1,) * (stepped.dim() - 1)
    g = stepped - a.reshape(shape) * window_states
    g[0] = stepped[0]
    out = apply_transfer(transfer_matrix(a), g)
    out[0] = stepped[0]  # bit-identical to a sequential step
    return out


def cumulative_residual(stepped: Tensor, states: Tensor) -> Tensor:
    """sum_{i <= j} (F_i(x_i) - x_{i+1}) over the window [w,B,*event]: the convergence measure.

    It is the state change of the cumulative update, and the more conservative
    measure for the exact-linear form, whose own change discounts every upstream
    residual by a_j < 1 (benchmarks/README.md).
    """
    return torch.cumsum(stepped - states, dim=0)


def discounted_sum_matrix(a: Tensor, order_k: int) -> Tensor:
    """[W,W] matrix M with (M r)_t = sum_{s = max(0, t-k+1)..t} (prod a_{s+1..t}) r_s."""
    matrix = transfer_matrix(a)
    w = a.shape[0]
    if order_k < w:
        rows = torch.arange(w, device=a.device)
        matrix = matrix * ((rows.unsqueeze(1) - rows.unsqueeze(0)) < order_k).to(matrix.dtype)
    return matrix


def windowed_sum(r: Tensor, order_k: int, a: Tensor | None = None) -> Tensor:
    """Order-k residual R_t from one-step residuals r along dim 0 (window positions).

    a None: R_t = sum of the last ``order_k`` entries of r (cumulative form).
    a [W]: R_t = a_t R_{t-1} + r_t truncated to the last order_k terms.
    """
    if a is None:
        c = torch.cumsum(r, dim=0)
        if order_k >= r.shape[0]:
            return c
        out = c.clone()
        out[order_k:] = c[order_k:] - c[:-order_k]
        return out
    return apply_transfer(discounted_sum_matrix(a, order_k), r)
