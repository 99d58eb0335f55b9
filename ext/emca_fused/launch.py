"""Launching the Triton kernels of :mod:`emca_fused.triton_kernels`: tile sizes, outputs, device.

Triton decides between compiling a kernel for the GPU and running it in its CPU interpreter
(``TRITON_INTERPRET=1``) when ``@triton.jit`` decorates it - for its own standard library
(``tl.zeros``, ``tl.sum``, ...) that is when ``triton`` is first imported, which torchmetrics and
Lightning already do on import. The mode is therefore fixed per process: the variable has to be in the
environment before Python starts, and :func:`interpreter_enabled` reads the mode Triton's library was
decorated in rather than the variable.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.interpreter import InterpretedFunction

from emca_fused import triton_kernels

TRITON_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def interpreter_enabled() -> bool:
    """Whether this process runs Triton kernels in the CPU interpreter (TRITON_INTERPRET=1 at startup)."""
    return isinstance(tl.zeros, InterpretedFunction)


def interpreter_requested_too_late() -> bool:
    """TRITON_INTERPRET=1 is set now but was not when Triton was imported: kernels cannot run on the CPU."""
    return bool(triton.knobs.runtime.interpret) and not interpreter_enabled()


def _check_kernel_mode() -> None:
    if isinstance(triton_kernels.forward_kernel, InterpretedFunction) != interpreter_enabled():
        raise RuntimeError(
            "emca_fused: TRITON_INTERPRET changed between importing triton and importing the fused kernels, "
            "so they were decorated in a different mode from Triton's own library; set it (or leave it "
            "unset) in the environment before starting Python"
        )


class LaunchConfig(NamedTuple):
    """Tile sizes and compiler settings shared by the forward and backward launches."""

    block_n: int
    block_m: int
    block_dk: int
    block_dv: int
    num_warps: int
    num_stages: int
    input_precision: str
    dot_dtype: tl.dtype

    def constants(self) -> dict[str, object]:
        return {
            "BLOCK_N": self.block_n,
            "BLOCK_M": self.block_m,
            "BLOCK_DK": self.block_dk,
            "BLOCK_DV": self.block_dv,
            "INPUT_PRECISION": self.input_precision,
            "DOT_DTYPE": self.dot_dtype,
        }

    def launch_options(self) -> dict[str, object]:
        # FMA contraction stated explicitly (Triton 3.9 warns that its default will change).
        return {
            **self.constants(),
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
            "enable_fp_fusion": True,
        }


def launch_config(dtype: torch.dtype, key_width: int, value_width: int) -> LaunchConfig:
    """The configuration for query/key/value of ``dtype`` and the given feature widths."""
    # tl.dot needs every tile dimension >= 16; padded feature columns are masked to zero.
    block_dk = max(16, triton.next_power_of_2(key_width))
    block_dv = max(16, triton.next_power_of_2(value_width))
    # 32-bit tiles are twice the bytes: halve them so two pipeline stages of the (tile x Dv=256) value or
    # output-gradient tiles stay well inside the shared memory of an A100 or H100 (checked by compiling
    # for sm_80 and sm_90; the tests recheck bfloat16 for sm_90).
    block = 32 if dtype == torch.float32 else 64
    # Wide value tiles need 8 warps, so each thread's share of the (tile x Dv) float32 accumulators and
    # operand tiles fits in registers (with 4 warps, ptxas spills the float32 backward at Dv = 256).
    num_warps = 8 if block_dv >= 128 else 4
    # Follow torch's float32 matmul setting so fp32 results match torch.bmm ("highest" = IEEE fp32).
    precision = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    # The interpreter's tl.dot reads bfloat16 bit patterns as integers; give it float32 operands.
    interpreted_bfloat16 = interpreter_enabled() and dtype == torch.bfloat16
    return LaunchConfig(
        block_n=block,
        block_m=block,
        block_dk=block_dk,
        block_dv=block_dv,
        num_warps=num_warps,
        num_stages=2,
        input_precision=precision,
        dot_dtype=tl.float32 if interpreted_bfloat16 else TRITON_DTYPES[dtype],
    )


def _sizes_and_strides(query: Tensor, key: Tensor, value: Tensor) -> list[int]:
    """N, M, Dk, Dv and the (batch, token, feature) strides of query, key and value: every kernel's
    arguments after its pointers."""
    sizes = [query.shape[1], key.shape[1], query.shape[2], value.shape[2]]
    return sizes + [stride for tensor in (query, key, value) for stride in tensor.stride()]


def _device_guard(tensor: Tensor) -> contextlib.AbstractContextManager:
    """Launch on the tensors' GPU (Triton launches on the current CUDA device)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def forward(query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """Return the attention output (B, N, Dv) in value's dtype and the logsumexp (B, N) float32, contiguous."""
    batch, queries, key_width = query.shape
    value_width = value.shape[2]
    attention = torch.empty((batch, queries, value_width), dtype=value.dtype, device=query.device)
    logsumexp = torch.empty((batch, queries), dtype=torch.float32, device=query.device)
    _check_kernel_mode()
    config = launch_config(query.dtype, key_width, value_width)
    with _device_guard(query):
        triton_kernels.forward_kernel[(triton.cdiv(queries, config.block_n), batch)](
            query,
            key,
            value,
            attention,
            logsumexp,
            *_sizes_and_strides(query, key, value),
            **config.launch_options(),
        )
    return attention, logsumexp


def backward(
    d_attention: Tensor, query: Tensor, key: Tensor, value: Tensor, logsumexp: Tensor, delta: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dQ, dK, dV) from dO = d_attention (B, N, Dv) and
    delta = rowsum(dO * O) - d logsumexp (B, N)."""
    batch, queries, key_width = query.shape
    keys, value_width = value.shape[1], value.shape[2]
    d_attention, logsumexp, delta = d_attention.contiguous(), logsumexp.contiguous(), delta.contiguous()
    d_query = torch.empty((batch, queries, key_width), dtype=query.dtype, device=query.device)
    d_key = torch.empty((batch, keys, key_width), dtype=key.dtype, device=key.device)
    d_value = torch.empty((batch, keys, value_width), dtype=value.dtype, device=value.device)
    _check_kernel_mode()
    config = launch_config(query.dtype, key_width, value_width)
    shared = _sizes_and_strides(query, key, value)
    with _device_guard(query):
        triton_kernels.backward_key_value_kernel[(triton.cdiv(keys, config.block_m), batch)](
            query, key, value, d_attention, logsumexp, delta, d_key, d_value, *shared, **config.launch_options()
        )
        triton_kernels.backward_query_kernel[(triton.cdiv(queries, config.block_n), batch)](
            query, key, value, d_attention, logsumexp, delta, d_query, *shared, **config.launch_options()
        )
    return d_query, d_key, d_value
