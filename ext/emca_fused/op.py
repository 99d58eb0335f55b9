"""The fused attention as torch custom ops, so it works under autograd, torch.compile and opcheck.

``emca::xing_attention`` returns the gated output together with what its backward needs (the
pre-gate attention output O and the per-query logsumexp), because a custom op's autograd can only
save inputs and outputs. ``emca::xing_attention_backward`` runs the dQ / dK / dV kernels; the
linear-size parts of the backward (d residual, d gamma and the row sums ``delta``) are plain torch ops
in the autograd formula, where torch.compile can fuse them.

Triton is imported only when a kernel runs, so registering the ops needs no Triton installation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_inputs(query: Tensor, key: Tensor, value: Tensor, residual: Tensor, gamma: Tensor) -> None:
    """Raise ValueError naming the offending tensor unless the shapes, dtypes and devices fit the kernel."""
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3 or residual.dim() != 3:
        raise ValueError(
            "fused attention expects query (B, N, Dk), key (B, M, Dk), value (B, M, Dv) and residual "
            f"(B, N, Dv); got shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}, "
            f"{tuple(residual.shape)}"
        )
    batch, queries, key_width = query.shape
    keys, value_width = value.shape[1], value.shape[2]
    expected = {
        "key": (batch, keys, key_width),
        "value": (batch, keys, value_width),
        "residual": (batch, queries, value_width),
    }
    for name, tensor in (("key", key), ("value", value), ("residual", residual)):
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"fused attention: {name} has shape {tuple(tensor.shape)}, expected "
                f"{expected[name]} from query {tuple(query.shape)} and value "
                f"{tuple(value.shape)}"
            )
    if keys == 0:
        raise ValueError("fused attention needs at least one key (M >= 1); softmax over no keys is undefined")
    if gamma.numel() != 1:
        raise ValueError(f"fused attention: gamma must be a scalar tensor, got shape {tuple(gamma.shape)}")
    tensors = {"query": query, "key": key, "value": value, "residual": residual}
    if (
        query.dtype not in SUPPORTED_DTYPES
        or key.dtype != query.dtype
        or value.dtype != query.dtype
        or residual.dtype not in SUPPORTED_DTYPES
    ):
        dtypes = {name: str(t.dtype) for name, t in tensors.items()}
        raise ValueError(
            "fused attention needs query, key and value of one dtype, and a residual dtype, "
            f"among float32, bfloat16, float16; got {dtypes}"
        )
    if any(t.device != query.device for t in (*tensors.values(), gamma)):
        raise ValueError(
            "fused attention needs all tensors on one device; got "
            f"{ ({name: str(t.device) for name, t in {**tensors, 'gamma': gamma}.items()}) }"
        )


def output_dtypes(value: Tensor, residual: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(output, attention) dtypes: the attention in the compute dtype of value, the output promoted with the
    residual as ``residual + gamma * attention`` promotes (e.g. float32 under bf16 autocast)."""
    return torch.promote_types(residual.dtype, value.dtype), value.dtype


@torch.library.custom_op("emca::xing_attention", mutates_args=())
def xing_attention_with_statistics(
    query: Tensor, key: Tensor, value: Tensor, residual: Tensor, gamma: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(B, N, Dk), (B, M, Dk), (B, M, Dv), (B, N, Dv), () -> output (B, N, Dv) = residual + gamma * O,
    O = softmax(query @ key^T) @ value (B, N, Dv), logsumexp of each query's scores (B, N) float32."""
    from emca_fused import launch

    check_inputs(query, key, value, residual, gamma)
    return launch.forward(query, key, value, residual, gamma)


@xing_attention_with_statistics.register_fake
def _(query: Tensor, key: Tensor, value: Tensor, residual: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    check_inputs(query, key, value, residual, gamma)
    batch, queries, _ = query.shape
    output_dtype, attention_dtype = output_dtypes(value, residual)
    shape = (batch, queries, value.shape[-1])
    return (
        query.new_empty(shape, dtype=output_dtype),
        query.new_empty(shape, dtype=attention_dtype),
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
    return (
        torch.empty(query.shape, dtype=query.dtype, device=query.device),
        torch.empty(key.shape, dtype=key.dtype, device=key.device),
        torch.empty(value.shape, dtype=value.dtype, device=value.device),
    )


def _setup_context(ctx: Any, inputs: tuple[Tensor, ...], output: tuple[Tensor, Tensor, Tensor]) -> None:
    query, key, value, residual, gamma = inputs
    _, attention, logsumexp = output
    ctx.save_for_backward(query, key, value, gamma, attention, logsumexp)
    ctx.residual_dtype = residual.dtype


def _backward(
    ctx: Any, grad_output: Tensor, grad_attention: Tensor, grad_logsumexp: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    query, key, value, gamma, attention, logsumexp = ctx.saved_tensors
    # output = residual + gamma * O, and O is also returned itself.
    d_attention = (gamma * grad_output + grad_attention).to(value.dtype)
    # d logsumexp_i / d score_ij = p_ij, so a logsumexp gradient folds into delta with a minus sign.
    delta = (d_attention.float() * attention.float()).sum(-1) - grad_logsumexp
    d_query, d_key, d_value = xing_attention_backward(d_attention, query, key, value, logsumexp, delta)
    d_gamma = (grad_output.float() * attention.float()).sum().to(gamma.dtype).reshape(gamma.shape)
    return d_query, d_key, d_value, grad_output.to(ctx.residual_dtype), d_gamma


xing_attention_with_statistics.register_autograd(_backward, setup_context=_setup_context)


def xing_attention(query: Tensor, key: Tensor, value: Tensor, residual: Tensor, gamma: Tensor) -> Tensor:
    """residual + gamma * softmax(query @ key^T) @ value by the fused kernel: (B, N, Dk), (B, M, Dk),
    (B, M, Dv), (B, N, Dv), () -> (B, N, Dv)."""
    return xing_attention_with_statistics(query, key, value, residual, gamma)[0]
