"""Fused Triton cross-attention for emca (``model/attention=fused``).

:class:`FusedAttention` is the backend module. It calls :func:`xing_attention`, the gated output of
the differentiable custom op ``torch.ops.emca.xing_attention`` (:func:`xing_attention_with_statistics`,
which also returns the pre-gate attention and the logsumexp its backward op
``torch.ops.emca.xing_attention_backward`` needs).
"""

from emca_fused.backend import FusedAttention, kernel_unavailable_reason
from emca_fused.op import xing_attention, xing_attention_backward, xing_attention_with_statistics

__all__ = [
    "FusedAttention",
    "kernel_unavailable_reason",
    "xing_attention",
    "xing_attention_backward",
    "xing_attention_with_statistics",
]
