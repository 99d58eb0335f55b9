"""Triton kernels for the attention ``softmax(query @ key^T) @ value`` (scale 1, as XingGAN).

FlashAttention-2 scheme: each program owns a tile of queries (forward, dQ) or keys (dK, dV) of one
batch element and loops over the other axis, so the (N, M) probability matrix only ever exists one
(BLOCK_N, BLOCK_M) tile at a time. The forward keeps a running row maximum and row sum (online
softmax) and saves the attention output O and the per-query logsumexp; the backward
recomputes the probabilities from the logsumexp tile by tile:

    dV = P^T dO,   dP = dO V^T,   dS = P * (dP - delta),   dQ = dS K,   dK = dS^T Q

with dO the gradient of O and delta = rowsum(dO * O) (minus any logsumexp gradient).

Any N, M >= 1 and any Dk, Dv: the feature axes are padded to power-of-two blocks and masked. Input
tiles are cast to DOT_DTYPE right after loading: the input dtype on GPUs (a no-op), float32 in the
CPU interpreter for bfloat16 inputs, whose ``tl.dot`` mistakes bfloat16 bit patterns for integers.
Accumulation is always float32. Launched by :mod:`emca_fused.launch`.
"""

import triton
import triton.language as tl


@triton.jit
def load_tile(base, rows, columns, stride_row, stride_column, row_limit, column_limit, other):
    """The (len(rows), len(columns)) tile at base[rows, columns], ``other`` outside the limits."""
    mask = (rows[:, None] < row_limit) & (columns[None, :] < column_limit)
    offsets = rows[:, None] * stride_row + columns[None, :] * stride_column
    return tl.load(base + offsets, mask=mask, other=other)


@triton.jit
def store_tile(base, rows, columns, row_limit, column_limit, tile):
    """Store a tile into a contiguous (row_limit, column_limit) matrix, skipping the padding."""
    mask = (rows[:, None] < row_limit) & (columns[None, :] < column_limit)
    offsets = rows[:, None] * column_limit + columns[None, :]
    tl.store(base + offsets, tile.to(base.dtype.element_ty), mask=mask)


@triton.jit
def load_row_statistics(logsumexp_ptr, delta_ptr, batch, queries, rows):
    """The saved logsumexp and delta of the query ``rows`` of one batch element (0 for padding rows)."""
    offsets = batch * queries + rows
    logsumexp = tl.load(logsumexp_ptr + offsets, mask=rows < queries, other=0.0)
    delta = tl.load(delta_ptr + offsets, mask=rows < queries, other=0.0)
    return logsumexp, delta


@triton.jit
def forward_kernel(
    query_ptr,
    key_ptr,
    value_ptr,  # inputs, strided
    attention_ptr,
    logsumexp_ptr,  # outputs, contiguous (B, N, Dv), (B, N)
    queries,
    keys,
    key_width,
    value_width,  # N, M, Dk, Dv
    stride_qb,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_km,
    stride_kd,
    stride_vb,
    stride_vm,
    stride_vd,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    """One program per (query tile, batch element)."""
    batch = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    key_dims = tl.arange(0, BLOCK_DK)
    value_dims = tl.arange(0, BLOCK_DV)
    key_base = key_ptr + batch * stride_kb
    value_base = value_ptr + batch * stride_vb

    query = load_tile(query_ptr + batch * stride_qb, rows, key_dims, stride_qn, stride_qd, queries, key_width, 0.0).to(
        DOT_DTYPE
    )
    row_max = tl.full([BLOCK_N], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_N], tl.float32)
    accumulator = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start in range(0, keys, BLOCK_M):
        columns = start + tl.arange(0, BLOCK_M)
        key_t = load_tile(key_base, key_dims, columns, stride_kd, stride_km, key_width, keys, 0.0).to(DOT_DTYPE)
        value = load_tile(value_base, columns, value_dims, stride_vm, stride_vd, keys, value_width, 0.0).to(DOT_DTYPE)
        scores = tl.dot(query, key_t, input_precision=INPUT_PRECISION)
        scores = tl.where(columns[None, :] < keys, scores, float("-inf"))
        # Every tile holds at least one real key, so new_max is finite, and on the first tile
        # exp(-inf - new_max) = 0 discards the empty running state.
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        rescale = tl.exp(row_max - new_max)
        probabilities = tl.exp(scores - new_max[:, None])
        row_sum = row_sum * rescale + tl.sum(probabilities, 1)
        accumulator = accumulator * rescale[:, None] + tl.dot(
            probabilities.to(DOT_DTYPE), value, input_precision=INPUT_PRECISION
        )
        row_max = new_max

    attention = accumulator / row_sum[:, None]
    store_tile(attention_ptr + batch * queries * value_width, rows, value_dims, queries, value_width, attention)
    tl.store(logsumexp_ptr + batch * queries + rows, row_max + tl.log(row_sum), mask=rows < queries)


@triton.jit
def backward_key_value_kernel(
    query_ptr,
    key_ptr,
    value_ptr,  # inputs, strided
    d_attention_ptr,
    logsumexp_ptr,
    delta_ptr,  # contiguous (B, N, Dv), (B, N), (B, N)
    d_key_ptr,
    d_value_ptr,  # outputs, contiguous (B, M, Dk), (B, M, Dv)
    queries,
    keys,
    key_width,
    value_width,
    stride_qb,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_km,
    stride_kd,
    stride_vb,
    stride_vm,
    stride_vd,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    """One program per (key tile, batch element): dK and dV summed over all query tiles."""
    batch = tl.program_id(1).to(tl.int64)
    columns = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    key_dims = tl.arange(0, BLOCK_DK)
    value_dims = tl.arange(0, BLOCK_DV)
    query_base = query_ptr + batch * stride_qb
    d_attention_base = d_attention_ptr + batch * queries * value_width

    key = load_tile(key_ptr + batch * stride_kb, columns, key_dims, stride_km, stride_kd, keys, key_width, 0.0).to(
        DOT_DTYPE
    )
    value = load_tile(
        value_ptr + batch * stride_vb, columns, value_dims, stride_vm, stride_vd, keys, value_width, 0.0
    ).to(DOT_DTYPE)
    d_key = tl.zeros([BLOCK_M, BLOCK_DK], tl.float32)
    d_value = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start in range(0, queries, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        query = load_tile(query_base, rows, key_dims, stride_qn, stride_qd, queries, key_width, 0.0).to(DOT_DTYPE)
        d_attention = load_tile(d_attention_base, rows, value_dims, value_width, 1, queries, value_width, 0.0).to(
            DOT_DTYPE
        )
        # Padding queries have zero query and output-gradient rows, so they add nothing to dK or dV.
        logsumexp, delta = load_row_statistics(logsumexp_ptr, delta_ptr, batch, queries, rows)
        # Transposed (keys x queries) tiles, so the sums over queries are plain matrix products.
        scores_t = tl.dot(key, tl.trans(query), input_precision=INPUT_PRECISION)
        probabilities_t = tl.exp(scores_t - logsumexp[None, :])
        d_value += tl.dot(probabilities_t.to(DOT_DTYPE), d_attention, input_precision=INPUT_PRECISION)
        d_probabilities_t = tl.dot(value, tl.trans(d_attention), input_precision=INPUT_PRECISION)
        d_scores_t = probabilities_t * (d_probabilities_t - delta[None, :])
        d_key += tl.dot(d_scores_t.to(DOT_DTYPE), query, input_precision=INPUT_PRECISION)

    store_tile(d_key_ptr + batch * keys * key_width, columns, key_dims, keys, key_width, d_key)
    store_tile(d_value_ptr + batch * keys * value_width, columns, value_dims, keys, value_width, d_value)


@triton.jit
def backward_query_kernel(
    query_ptr,
    key_ptr,
    value_ptr,  # inputs, strided
    d_attention_ptr,
    logsumexp_ptr,
    delta_ptr,  # contiguous (B, N, Dv), (B, N), (B, N)
    d_query_ptr,  # output, contiguous (B, N, Dk)
    queries,
    keys,
    key_width,
    value_width,
    stride_qb,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_km,
    stride_kd,
    stride_vb,
    stride_vm,
    stride_vd,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
):
    """One program per (query tile, batch element): dQ summed over all key tiles (no atomics)."""
    batch = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    key_dims = tl.arange(0, BLOCK_DK)
    value_dims = tl.arange(0, BLOCK_DV)
    key_base = key_ptr + batch * stride_kb
    value_base = value_ptr + batch * stride_vb

    query = load_tile(query_ptr + batch * stride_qb, rows, key_dims, stride_qn, stride_qd, queries, key_width, 0.0).to(
        DOT_DTYPE
    )
    d_attention = load_tile(
        d_attention_ptr + batch * queries * value_width, rows, value_dims, value_width, 1, queries, value_width, 0.0
    ).to(DOT_DTYPE)
    logsumexp, delta = load_row_statistics(logsumexp_ptr, delta_ptr, batch, queries, rows)
    d_query = tl.zeros([BLOCK_N, BLOCK_DK], tl.float32)
    for start in range(0, keys, BLOCK_M):
        columns = start + tl.arange(0, BLOCK_M)
        key = load_tile(key_base, columns, key_dims, stride_km, stride_kd, keys, key_width, 0.0).to(DOT_DTYPE)
        value = load_tile(value_base, columns, value_dims, stride_vm, stride_vd, keys, value_width, 0.0).to(DOT_DTYPE)
        scores = tl.dot(query, tl.trans(key), input_precision=INPUT_PRECISION)
        # Padding keys have zero key rows, so they add nothing to dQ (no mask needed, unlike the softmax).
        probabilities = tl.exp(scores - logsumexp[:, None])
        d_probabilities = tl.dot(d_attention, tl.trans(value), input_precision=INPUT_PRECISION)
        d_scores = probabilities * (d_probabilities - delta[:, None])
        d_query += tl.dot(d_scores.to(DOT_DTYPE), key, input_precision=INPUT_PRECISION)

    store_tile(d_query_ptr + batch * queries * key_width, rows, key_dims, queries, key_width, d_query)
