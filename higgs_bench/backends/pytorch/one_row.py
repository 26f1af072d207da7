"""The one-row decode step's layers as four Triton kernels and SDPA each, for 16-bit weights on CUDA.

At one row every product reads a weight matrix once for one input row, so a step is 112 matrix-vector products
that each cost a few microseconds above their bytes' time at memory bandwidth, plus a dozen small kernels per
layer around them (docs/performance.md). Here each product is one kernel in which every program loads its whole
tile of weight rows at once (all of its reads in flight together) and does the small work around it:

- `qkv_kernel`: the input RMSNorm, the q/k/v product, RoPE on q and k, and k and v written into the cache column;
- SDPA over the cache (cuDNN), as the compiled layer runs it;
- `residual_kernel`: the o product added to the residual stream, in place (and the down product likewise);
- `gate_up_kernel`: the post-attention RMSNorm, the gate/up product and SiLU(gate) * up.

On CUDA each kernel is launched with programmatic dependent launch (PDL): it may start while the kernel ahead of
it ends, and waits for it (`griddepcontrol.wait`) before reading anything. Rounding follows network.py's
operations in the activation dtype. Rows are paired where the epilogue needs two of them: RoPE's (d, d + half a
head) and gate/up's (i, intermediate + i), so no weight is reordered or copied. Triton's interpreter runs these
kernels on a CPU (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from higgs_bench.model.config import DUAL, SKIP, HiggsConfig

# Rows per program and warps, by product, measured at the 3B shape on an H200 (benchmarks/gemv_pdl_probe_gpu.py:
# the fastest chain of 28 products per kind with PDL). A program holds its tile in registers, so rows are halved
# for wider inputs until a thread holds at most MAX_TILE_BYTES_PER_THREAD of it.
BLOCKS = {"qkv": (4, 4), "o": (8, 8), "gate_up": (2, 4), "down": (1, 8)}
MAX_TILE_BYTES_PER_THREAD = 256


@triton.jit
def _wait_for_previous_kernel(PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()


@triton.jit
def _tile(w_ptr, rows, K: tl.constexpr, K_PAD: tl.constexpr):
    cols = tl.arange(0, K_PAD)
    return tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=(cols < K)[None, :], other=0.0)


@triton.jit
def _row(x_ptr, K: tl.constexpr, K_PAD: tl.constexpr):
    cols = tl.arange(0, K_PAD)
    return tl.load(x_ptr + cols, mask=cols < K, other=0.0)


@triton.jit
def _rounded(x, dtype: tl.constexpr):
    """x (float32) rounded to `dtype` and back: an operation of network.py in that dtype. Every operation here
    works in float32 this way (Triton's interpreter cannot do arithmetic on bfloat16 itself)."""
    return x.to(dtype).to(tl.float32)


@triton.jit
def _rms_normed(h_ptr, norm_ptr, eps, K: tl.constexpr, K_PAD: tl.constexpr, dtype: tl.constexpr):
    """network.RMSNorm of the row: normalised in float32, rounded, times the norm's weight, rounded."""
    h = _row(h_ptr, K, K_PAD).to(tl.float32)
    scaled = _rounded(h * tl.rsqrt(tl.sum(h * h, axis=0) / K + eps), dtype)
    return _rounded(scaled * _row(norm_ptr, K, K_PAD).to(tl.float32), dtype)


@triton.jit
def _product(w, x, dtype: tl.constexpr):
    """Each tile row times x (float32), summed in float32, rounded to `dtype`."""
    return _rounded(tl.sum(w.to(tl.float32) * x[None, :], axis=1), dtype)


@triton.jit
def qkv_kernel(h_ptr, norm_ptr, eps, w_ptr, cos_ptr, sin_ptr, column_ptr, q_ptr, k_ptr, v_ptr, cache_stride,
               K: tl.constexpr, K_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEADS: tl.constexpr,
               KV_HEADS: tl.constexpr, HALF_BLOCK: tl.constexpr, PDL: tl.constexpr):
    """Program p: rows (d, d + HEAD_DIM/2) of one head, for HALF_BLOCK values of d; q to q_ptr, k and v to
    their caches' column."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    per_head: tl.constexpr = HEAD_DIM // 2 // HALF_BLOCK
    head = tl.program_id(0) // per_head
    d = (tl.program_id(0) % per_head) * HALF_BLOCK + tl.arange(0, HALF_BLOCK)
    rows = head * HEAD_DIM + d
    _wait_for_previous_kernel(PDL)
    x = _rms_normed(h_ptr, norm_ptr, eps, K, K_PAD, dtype)
    first = _product(_tile(w_ptr, rows, K, K_PAD), x, dtype)
    second = _product(_tile(w_ptr, rows + HEAD_DIM // 2, K, K_PAD), x, dtype)
    if head < HEADS + KV_HEADS:  # RoPE as network.Attention applies it: x * cos + rotate_half(x) * sin
        cos, sin = tl.load(cos_ptr + d).to(tl.float32), tl.load(sin_ptr + d).to(tl.float32)
        first, second = (_rounded(_rounded(first * cos, dtype) - _rounded(second * sin, dtype), dtype),
                         _rounded(_rounded(second * cos, dtype) + _rounded(first * sin, dtype), dtype))
    column = tl.load(column_ptr)
    if head < HEADS:
        out = q_ptr + head * HEAD_DIM
    elif head < HEADS + KV_HEADS:
        out = k_ptr + (head - HEADS) * cache_stride + column * HEAD_DIM
    else:
        out = v_ptr + (head - HEADS - KV_HEADS) * cache_stride + column * HEAD_DIM
    tl.store(out + d, first.to(dtype))
    tl.store(out + d + HEAD_DIM // 2, second.to(dtype))


@triton.jit
def residual_kernel(x_ptr, w_ptr, h_ptr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
                    PDL: tl.constexpr):
    """h[rows] += W[rows] @ x, for this program's BLOCK rows."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    _wait_for_previous_kernel(PDL)
    out = _product(_tile(w_ptr, rows, K, K_PAD), _row(x_ptr, K, K_PAD).to(tl.float32), dtype)
    tl.store(h_ptr + rows, (tl.load(h_ptr + rows).to(tl.float32) + out).to(dtype))


@triton.jit
def gate_up_kernel(h_ptr, norm_ptr, eps, w_ptr, act_ptr, INTERMEDIATE: tl.constexpr, K: tl.constexpr,
                   K_PAD: tl.constexpr, HALF_BLOCK: tl.constexpr, PDL: tl.constexpr):
    """act[i] = SiLU(gate[i]) * up[i] for this program's HALF_BLOCK values of i (gate rows i, up rows
    INTERMEDIATE + i), of the RMSNormed row."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    i = tl.program_id(0) * HALF_BLOCK + tl.arange(0, HALF_BLOCK)
    _wait_for_previous_kernel(PDL)
    x = _rms_normed(h_ptr, norm_ptr, eps, K, K_PAD, dtype)
    gate = _product(_tile(w_ptr, i, K, K_PAD), x, dtype)
    up = _product(_tile(w_ptr, i + INTERMEDIATE, K, K_PAD), x, dtype)
    silu = _rounded(gate / (1.0 + tl.exp(-gate)), dtype)
    tl.store(act_ptr + i, (silu * up).to(dtype))


def rows_per_program(kind: str, rows: int, inputs: int, itemsize: int, pair: int = 1) -> tuple[int, int]:
    """(rows per program, warps) for a product: BLOCKS' choice, halved until its tile fits the register budget
    and the rows (in groups of `pair`) divide evenly."""
    block, warps = BLOCKS[kind]
    while block > pair and (block * triton.next_power_of_2(inputs) * itemsize > MAX_TILE_BYTES_PER_THREAD * 32 * warps
                            or rows % block):
        block //= 2
    return block, warps


@dataclass
class LayerWeights:
    qkv: torch.Tensor
    o: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    input_norm: torch.Tensor
    post_norm: torch.Tensor


class OneRowLayers:
    """The network's layers for a decode step of one row: `run` replaces HiggsNetwork.forward's layer loop for
    an all-audio frame (the final norm stays the network's)."""

    def __init__(self, network, cfg: HiggsConfig):
        self.cfg = cfg
        self.layers = [None if kind == SKIP else _weights(layer, kind) for layer, kind in
                       zip(network.layers, cfg.layer_kinds)]
        self.pdl = network.inv_freq.device.type == "cuda"  # the interpreter runs no PTX
        dtype = network.layers[0].self_attn.qkv_proj.weight.dtype
        hidden, inter, item = cfg.hidden_size, cfg.intermediate_size, dtype.itemsize
        self.blocks = {"qkv": rows_per_program("qkv", cfg.head_dim, hidden, item, pair=2),
                       "o": rows_per_program("o", hidden, cfg.num_heads * cfg.head_dim, item),
                       "gate_up": rows_per_program("gate_up", inter, hidden, item, pair=2),
                       "down": rows_per_program("down", hidden, inter, item)}

    def run(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, column: torch.Tensor,
            caches: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> torch.Tensor:
        """h [1, 1, H] (overwritten: the residual stream is updated in place), RoPE's cos and sin at the row's
        position (HiggsNetwork.rope: [1, 1, 1, head_dim]), its cache column [1] (long), caches [1, KV heads,
        columns, head_dim] each, mask [1, 1, 1, columns] -> h after every layer."""
        cfg = self.cfg
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = h.new_empty(1, heads, 1, head_dim)
        act = h.new_empty(cfg.intermediate_size)
        launch = {"launch_pdl": True} if self.pdl else {}
        # the bool mask as the additive one SDPA would make of it in every layer (three small kernels each)
        bias = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill_(~mask, float("-inf"))
        hidden, hidden_pad = cfg.hidden_size, triton.next_power_of_2(cfg.hidden_size)
        for weights, (cache_k, cache_v) in zip(self.layers, caches):
            if weights is None:
                continue  # fast-forward: an all-audio step skips the layer
            block, warps = self.blocks["qkv"]
            qkv_kernel[((heads + 2 * kv_heads) * head_dim // block,)](
                h, weights.input_norm, cfg.rms_norm_eps, weights.qkv, cos, sin, column, q, cache_k,
                cache_v, cache_k.stride(1), K=hidden, K_PAD=hidden_pad, HEAD_DIM=head_dim, HEADS=heads,
                KV_HEADS=kv_heads, HALF_BLOCK=block // 2, PDL=self.pdl, num_warps=warps, **launch)
            attended = F.scaled_dot_product_attention(q, cache_k, cache_v, bias, enable_gqa=True)
            self._residual("o", attended.reshape(-1), weights.o, h, launch)
            block, warps = self.blocks["gate_up"]
            gate_up_kernel[(cfg.intermediate_size // (block // 2),)](
                h, weights.post_norm, cfg.rms_norm_eps, weights.gate_up, act, INTERMEDIATE=cfg.intermediate_size,
                K=hidden, K_PAD=hidden_pad, HALF_BLOCK=block // 2, PDL=self.pdl, num_warps=warps, **launch)
            self._residual("down", act, weights.down, h, launch)
        return h

    def _residual(self, kind: str, x: torch.Tensor, w: torch.Tensor, h: torch.Tensor, launch: dict) -> None:
        block, warps = self.blocks[kind]
        rows, inputs = w.shape
        residual_kernel[(rows // block,)](x, w, h, K=inputs, K_PAD=triton.next_power_of_2(inputs), BLOCK=block,
                                          PDL=self.pdl, num_warps=warps, **launch)


def _weights(layer, kind: str) -> LayerWeights:
    """A layer's tensors as an all-audio step reads them (network.Layer: audio norms and MLP in dual layers)."""
    audio = kind == DUAL
    mlp = layer.audio_mlp if audio else layer.mlp
    norms = ("audio_input_layernorm", "audio_post_attention_layernorm") if audio else \
        ("input_layernorm", "post_attention_layernorm")
    return LayerWeights(layer.self_attn.qkv_proj.weight, layer.self_attn.o_proj.weight, mlp.gate_up_proj.weight,
                        mlp.down_proj.weight, *(getattr(layer, norm).weight for norm in norms))
