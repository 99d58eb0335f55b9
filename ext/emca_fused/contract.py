"""What the fused attention accepts, checked without Triton: shapes, dtypes and devices.

Shared by the op (:mod:`emca_fused.op`, which checks before it launches or fakes a result) and the
launcher (:mod:`emca_fused.launch`), so neither imports the other for it.
"""

from __future__ import annotations

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_inputs(query: Tensor, key: Tensor, value: Tensor) -> None:
    """Raise ValueError naming the offending tensor unless query (B, N, Dk), key (B, M, Dk) and value
    (B, M, Dv) fit the kernel: one batch, M >= 1, one supported dtype, one device."""
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        raise ValueError(
            "fused attention expects query (B, N, Dk), key (B, M, Dk) and value (B, M, Dv); got shapes "
            f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
        )
    batch, _, key_width = query.shape
    keys = value.shape[1]
    if tuple(key.shape) != (batch, keys, key_width):
        raise ValueError(
            f"fused attention: key has shape {tuple(key.shape)}, expected {(batch, keys, key_width)} from query "
            f"{tuple(query.shape)} and value {tuple(value.shape)}"
        )
    if value.shape[0] != batch:
        raise ValueError(f"fused attention: value has batch {value.shape[0]}, query has {batch}")
    if keys == 0:
        raise ValueError("fused attention needs at least one key (M >= 1); softmax over no keys is undefined")
    tensors = {"query": query, "key": key, "value": value}
    if query.dtype not in SUPPORTED_DTYPES or key.dtype != query.dtype or value.dtype != query.dtype:
        dtypes = {name: str(t.dtype) for name, t in tensors.items()}
        raise ValueError(
            f"fused attention needs query, key and value of one dtype among {SUPPORTED_DTYPES}; got {dtypes}"
        )
    if any(t.device != query.device for t in tensors.values()):
        devices = {name: str(t.device) for name, t in tensors.items()}
        raise ValueError(f"fused attention needs all tensors on one device; got {devices}")
