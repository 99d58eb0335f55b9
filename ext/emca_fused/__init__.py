"""Fused Triton cross-attention: ``softmax(query @ key^T) @ value`` without storing the (N, M) matrix.

A standalone package (it imports torch, and Triton only when a kernel runs): :func:`xing_attention` is the
differentiable custom op ``torch.ops.emca.xing_attention`` (:func:`xing_attention_with_statistics` also
returns the logsumexp its backward op ``torch.ops.emca.xing_attention_backward`` needs). emca's
``model/attention=fused`` backend (emca.networks.attention.FusedAttention) calls it.
"""

from emca_fused.op import xing_attention, xing_attention_backward, xing_attention_with_statistics

__all__ = ["xing_attention", "xing_attention_backward", "xing_attention_with_statistics"]
