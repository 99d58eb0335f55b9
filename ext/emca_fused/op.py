"""The fused attention as torch custom ops, so it works under autograd, torch.compile and opcheck.

``emca::xing_attention`` returns the attention output O = softmax(query @ key^T) @ value together with
the per-query logsumexp, because a custom op's autograd can only save inputs and outputs and the
backward recomputes the probabilities from it. ``emca::xing_attention_backward`` runs the dQ / dK / dV
kernels; the row sums ``delta`` are a plain torch op in the autograd formula, where torch.compile can
fuse them.

Triton is imported only when a kernel runs, so registering the ops needs no Triton installation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from emca_fused.contract import check_inputs


@torch.library.custom_op("emca::xing_attention", mutates_args=())
def xing_attention_with_statistics(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """(B, N, Dk), (B, M, Dk), (B, M, Dv) -> O = softmax(query @ key^T) @ value (B, N, Dv) in value's dtype,
    and the logsumexp of each query's scores (B, N) float32."""
    from emca_fused import launch

    check_inputs(query, key, value)
    return launch.forward(query, key, value)


@xing_attention_with_statistics.register_fake
def _(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    check_inputs(query, key, value)
    batch, queries, _ = query.shape
    return (
        query.new_empty((batch, queries, value.shape[-1]), dtype=value.dtype),
        query.new_empty((batch, queries), dtype=torch.float32),
    )


@torch.library.custom_op("emca::xing_attention_backward", mutates_args=())
def xing_attention_backward(
    d_attention: Tensor, query: Tensor, key: Tensor, value: Tensor, logsumexp: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dQ, dK, dV) of O given dO = d_attention (B, N, Dv) and delta (B, N) float32,
    delta = rowsum(dO * O) - d logsumexp."""
    from emca_fused import launch

    return launch.backward(d_attention, query, key, value, logsumexp, delta)


@xing_attention_backward.register_fake
def _(
    d_attention: Tensor, query: Tensor, key: Tensor, value: Tensor, logsumexp: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    # contiguous, as the kernels write them (empty_like would copy the inputs' strides)
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (query, key, value))


def _setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor]) -> None:
    query, key, value = inputs
    attention, logsumexp = output
    ctx.save_for_backward(query, key, value, attention, logsumexp)


def _backward(ctx: Any, grad_attention: Tensor, grad_logsumexp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    query, key, value, attention, logsumexp = ctx.saved_tensors
    d_attention = grad_attention.to(value.dtype)
    # d logsumexp_i / d score_ij = p_ij, so a logsumexp gradient folds into delta with a minus sign.
    delta = (d_attention.float() * attention.float()).sum(-1) - grad_logsumexp
    return xing_attention_backward(d_attention, query, key, value, logsumexp, delta)


xing_attention_with_statistics.register_autograd(_backward, setup_context=_setup_context)


def xing_attention(query: Tensor, key: Tensor, value: Tensor) -> Tensor:
    """softmax(query @ key^T) @ value by the fused kernel: (B, N, Dk), (B, M, Dk), (B, M, Dv) -> (B, N, Dv)."""
    return xing_attention_with_statistics(query, key, value)[0]
