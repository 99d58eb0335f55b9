"""Attention backends: one call, ``backend(query, key, value) -> softmax(query @ key^T) @ value``.

Every branch of a cross-attention module (emca.networks.cross_attention, emca.networks.multiscale)
hands its tokens to the backend, laid out channels-last:

    query    (B, N, Dk)   e.g. Dk = 32
    key      (B, M, Dk)   M = N for full attention, fewer for pooled key sets, N + T with memory tokens
    value    (B, M, Dv)   e.g. Dv = 256
    output   (B, N, Dv)   scale 1, softmax over the keys, as the official XingGAN code

The gate (``residual + gamma * output``) belongs to the cross-attention module, not the backend, so
every backend does exactly one thing. Backends are stateless modules picked by config
(``model/attention=reference|sdpa|chunked|fused``) and shared by all blocks of a generator: ``reference``
materialises the (B, N, M) matrix (bmm + softmax, as the official code); ``sdpa`` is torch's
scaled_dot_product_attention; ``chunked`` is the reference math a chunk of queries at a time, with
FlashAttention's recomputing backward in plain PyTorch (any device); ``fused`` runs the Triton kernel of the standalone
``emca_fused`` package, which never stores the N x M matrix.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from emca.errors import Unavailable


def correlation_softmax(query: Tensor, key: Tensor) -> Tensor:
    """The attention matrix softmax(query @ key^T) over keys: (B, N, Dk), (B, M, Dk) -> (B, N, M)."""
    return torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1)


class ReferenceAttention(nn.Module):
    """Materialises the N x M attention matrix, as the official code does (memory O(B N M))."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return torch.bmm(correlation_softmax(query, key), value)


class SDPAttention(nn.Module):
    """torch.nn.functional.scaled_dot_product_attention with scale 1. Its fused (flash / memory-efficient)
    kernels only take 4-D (batch, heads, tokens, width) inputs, so the tokens get a singleton head axis;
    torch picks the kernel the device, dtype and widths allow."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        heads = (query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1))
        return F.scaled_dot_product_attention(*heads, scale=1.0).squeeze(1)


class _ChunkedAttentionFunction(torch.autograd.Function):
    """softmax(query @ key^T) @ value a chunk of queries at a time, FlashAttention's backward in plain torch.

    The forward keeps, besides the inputs, only the output and each query's logsumexp (B, N, 1); the backward
    recomputes a chunk's probabilities from them, so no (B, N, M) tensor ever exists. Shapes as in
    :class:`ReferenceAttention`.
    """

    @staticmethod
    def forward(ctx: Any, query: Tensor, key: Tensor, value: Tensor, chunk_size: int) -> Tensor:
        outputs, logsumexps = [], []
        for query_chunk in query.split(chunk_size, dim=1):
            scores = torch.bmm(query_chunk, key.transpose(1, 2))
            logsumexp = torch.logsumexp(scores, dim=-1, keepdim=True)
            outputs.append(torch.bmm(scores.sub_(logsumexp).exp_(), value))
            logsumexps.append(logsumexp)
        output = torch.cat(outputs, dim=1)
        ctx.save_for_backward(query, key, value, output, torch.cat(logsumexps, dim=1))
        ctx.chunk_size = chunk_size
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        query, key, value, output, logsumexp = ctx.saved_tensors
        # contiguous, whatever the inputs' strides: the callers pass transposed views, and accumulating into a
        # transposed bf16 tensor took CPU's baddbmm 20 s a chunk at 512x352 against milliseconds contiguous
        grad_output = grad_output.contiguous()
        contiguous = torch.contiguous_format
        d_query = torch.empty_like(query, memory_format=contiguous)
        d_key = torch.zeros_like(key, memory_format=contiguous)
        d_value = torch.zeros_like(value, memory_format=contiguous)
        for start in range(0, query.shape[1], ctx.chunk_size):
            rows = slice(start, start + ctx.chunk_size)
            query_chunk, grad_chunk = query[:, rows], grad_output[:, rows]
            probabilities = torch.bmm(query_chunk, key.transpose(1, 2)).sub_(logsumexp[:, rows]).exp_()
            d_value.baddbmm_(probabilities.transpose(1, 2), grad_chunk)
            delta = (grad_chunk * output[:, rows]).sum(-1, keepdim=True)  # rowsum(dO * O) = rowsum(P * dP)
            d_scores = torch.bmm(grad_chunk, value.transpose(1, 2)).sub_(delta).mul_(probabilities)
            d_query[:, rows] = torch.bmm(d_scores, key)
            d_key.baddbmm_(d_scores.transpose(1, 2), query_chunk)
        return d_query, d_key, d_value, None


class ChunkedAttention(nn.Module):
    """The reference math over ``chunk_size`` queries at a time; the backward recomputes each chunk's matrix.

    A chunk's (B, chunk, M) scores exist only while that chunk is computed. For its gradient the forward
    keeps the output and the per-query logsumexp (FlashAttention's scheme, in plain PyTorch), so peak memory
    is that of one chunk rather than (B, N, M), for one more query-key product in the backward. It runs
    wherever torch does: the memory-saving choice on CPUs and on GPUs without Triton.
    """

    def __init__(self, chunk_size: int = 256) -> None:
        super().__init__()
        assert chunk_size >= 1, chunk_size
        self.chunk_size = chunk_size

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        return _ChunkedAttentionFunction.apply(query, key, value, self.chunk_size)


_FUSED_ALTERNATIVES = "use SDPAttention or ReferenceAttention, or pass allow_reference_fallback=True"


def fused_kernel_unavailable_reason() -> str | None:
    """Why the fused kernel cannot run in this process, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    from emca_fused import launch  # imports Triton: only asked when the fused backend is chosen

    if torch.cuda.is_available() or launch.interpreter_enabled():
        return None
    if launch.interpreter_requested_too_late():
        return (
            "TRITON_INTERPRET=1 was set after triton had been imported (Triton reads it at import; "
            "export it before starting Python)"
        )
    return "no CUDA GPU is visible to torch"


def _fused_kernel_runs_on(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    from emca_fused import launch

    return launch.interpreter_enabled()


class FusedAttention(nn.Module):
    """The ``emca::xing_attention`` op of ``emca_fused``: FlashAttention-2 tiling, never stores (N, M).

    The kernel runs on CUDA tensors, or on any device when Python was started with ``TRITON_INTERPRET=1``
    (Triton's slow CPU interpreter, for tests). Where it cannot run, construction raises
    :class:`Unavailable` (a run's config is refused earlier, by emca.build) unless
    ``allow_reference_fallback`` is set, in which case it warns once and
    computes the reference math.
    """

    def __init__(self, allow_reference_fallback: bool = False) -> None:
        super().__init__()
        self.fallback = ReferenceAttention() if allow_reference_fallback else None
        reason = fused_kernel_unavailable_reason()
        if reason is None:
            return
        if self.fallback is None:
            raise Unavailable(f"The fused attention backend needs a CUDA GPU, but {reason}; {_FUSED_ALTERNATIVES}.")
        warnings.warn(
            f"FusedAttention: {reason}; falling back to the reference attention, which "
            "stores the N x M attention matrix",
            RuntimeWarning,
            stacklevel=2,
        )

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        if _fused_kernel_runs_on(query.device):
            from emca_fused.op import xing_attention

            return xing_attention(query, key, value)
        if self.fallback is not None:
            return self.fallback(query, key, value)
        raise Unavailable(
            f"The fused attention kernel got tensors on {query.device}, but it runs "
            f"on CUDA tensors only; move the model to the GPU, or {_FUSED_ALTERNATIVES}."
        )
