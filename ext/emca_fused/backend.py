"""``model/attention=fused``: the cross-attention backend that runs the fused Triton kernel."""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch import Tensor

from emca.errors import ConfigError
from emca.networks.attention import CrossAttention, ReferenceAttention
from emca_fused.op import xing_attention, xing_attention_with_statistics

_ALTERNATIVES = (
    "use model/attention=sdpa or model/attention=reference, or set model.attention.allow_reference_fallback=true"
)


def _interpreter_enabled() -> bool:
    """Whether Triton is installed and runs kernels in its CPU interpreter in this process."""
    if importlib.util.find_spec("triton") is None:
        return False
    from emca_fused import launch

    return launch.interpreter_enabled()


def kernel_unavailable_reason() -> str | None:
    """Why the kernel cannot run in this process, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    if torch.cuda.is_available() or _interpreter_enabled():
        return None
    from emca_fused import launch

    if launch.interpreter_requested_too_late():
        return (
            "TRITON_INTERPRET=1 was set after triton had been imported (Triton reads it at import; "
            "export it before starting Python)"
        )
    return "no CUDA GPU is visible to torch"


class FusedAttention(CrossAttention):
    """Gated cross-attention through the ``emca::xing_attention`` op: never stores the (N, M) matrix.

    Shapes as in :class:`CrossAttention`: query (B, N, Dk), key (B, M, Dk), value (B, M, Dv),
    residual (B, N, Dv), gamma () -> (B, N, Dv). The kernel runs on CUDA tensors, or on any device when
    Python was started with ``TRITON_INTERPRET=1`` (Triton's slow CPU interpreter, for tests). Where it
    cannot run, construction raises :class:`ConfigError` unless ``allow_reference_fallback`` is set, in
    which case it warns once and computes the reference math.
    """

    def __init__(self, allow_reference_fallback: bool = False) -> None:
        super().__init__()
        self.fallback = ReferenceAttention() if allow_reference_fallback else None
        reason = kernel_unavailable_reason()
        if reason is None:
            return
        if self.fallback is None:
            raise ConfigError(
                f"model.attention: the fused attention backend needs a CUDA GPU, but {reason}; {_ALTERNATIVES}."
            )
        warnings.warn(
            f"model.attention=fused: {reason}; falling back to the reference attention, which "
            "stores the N x M attention matrix",
            RuntimeWarning,
            stacklevel=2,
        )

    def _use_kernel(self, device: torch.device) -> bool:
        """True to run the kernel, False for the fallback; a ConfigError when neither can run."""
        if device.type == "cuda" or _interpreter_enabled():
            return True
        if self.fallback is not None:
            return False
        raise ConfigError(
            f"model.attention: the fused attention kernel got tensors on {device}, but it runs "
            f"on CUDA tensors only; move the model to the GPU, or {_ALTERNATIVES}."
        )

    def attend(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        if not self._use_kernel(query.device):
            return self.fallback.attend(query, key, value)
        residual = query.new_zeros((*query.shape[:-1], value.shape[-1]), dtype=value.dtype)
        return xing_attention_with_statistics(query, key, value, residual, query.new_zeros(()))[1]

    def forward(self, query: Tensor, key: Tensor, value: Tensor, residual: Tensor, gamma: Tensor) -> Tensor:
        if not self._use_kernel(query.device):
            return self.fallback(query, key, value, residual, gamma)
        return xing_attention(query, key, value, residual, gamma)
