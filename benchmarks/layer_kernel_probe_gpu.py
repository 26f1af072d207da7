"""A decode layer of one row as one persistent Triton kernel: does it close what one_row.py's five kernels per
layer spend between their products (int8's step 1.43 ms = 2.14x its own floor, its products alone 1.56x)?
Measured on an H200 (docs/performance.md, twenty-third session): no, 2.03 ms at best against 1.50 ms.

    python benchmarks/layer_kernel_probe_gpu.py CKPT OUT.json [--weights bf16|int8|fp8] [--columns 512]
        [--variants '[{"AHEAD": 2, "WARPS": 8}, ...]'] [--rounds 3]
    TRITON_INTERPRET=1 python benchmarks/layer_kernel_probe_gpu.py CKPT OUT.json --check   # a CPU, tiny model
    python benchmarks/layer_kernel_probe_gpu.py - OUT.json --ptxas 90   # registers and spills at the 3B shape, no GPU

One program per SM runs the whole layer: q/k/v (with the input norm, RoPE and the cache column), attention
(split over the cache, combined by the last split of each key/value head), o added to the residual, gate/up
(with the post-attention norm and SiLU), down added to the residual. Between phases every program waits at a
grid barrier (an atomic count in global memory; all programs are resident, one per SM). What one_row.py loses at
each kernel boundary (the tail of one kernel, the next one's first reads) is meant to go: before waiting, each
program asks L2 for the weight rows of its first AHEAD units of the next phase, and within a phase, for the
unit AHEAD rounds ahead (`prefetch.global.L2`), so the memory keeps reading while programs wait. The products'
arithmetic is one_row.py's (its jit functions), so the output matches its step up to summation order.

With `--check` each phase is a launch of its own (Triton's interpreter runs programs one after another, so a
grid barrier would never open), and the layers are compared with one_row.py's on the tiny checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import triton
import triton.language as tl

from higgs_bench.backends.pytorch import one_row
from higgs_bench.backends.pytorch.one_row import (_input, _prefetch_to_l2, _product, _rms_normed, _rounded, _row,
                                                  _tile, attention_constants, attention_split, qkv_store)

# The fastest measured (H200, int8, 512 columns: 2.025 ms against one_row.py's 1.503; docs/performance.md,
# twenty-third session). PER_SM programs per SM (registers capped to fit), DOUBLE: the next unit's tile loaded
# before this one's product, ATTENTION_BLOCK: cache columns a block (None: one_row.py's; smaller takes less shared
# memory, so that several programs fit an SM).
SETTINGS = {"AHEAD": 2, "WARPS": 4, "QKV_HALF": 4, "O_ROWS": 4, "GATE_UP_HALF": 4, "DOWN_ROWS": 2, "DOUBLE": False,
            "PER_SM": 4, "ATTENTION_BLOCK": 64}
PHASES = 5  # q/k/v, attention, o, gate/up, down


@triton.jit
def _grid_barrier(counter_ptr, target):
    """Waits until the counter reaches `target`, this program's arrival included: every program's stores before
    its arrival are then visible to this program (release on arrival, acquire while waiting)."""
    tl.debug_barrier()
    arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu") + 1
    while arrived < target:
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _prefetch_rows(w_ptr, rows, K: tl.constexpr, LINE: tl.constexpr, LINES_PAD: tl.constexpr):
    """Asks L2 for rows [rows, K] of w (LINE elements a cache line)."""
    at = tl.minimum(tl.arange(0, LINES_PAD) * LINE, K - 1)
    _prefetch_to_l2(w_ptr + rows[:, None] * K + at[None, :])


@triton.jit
def _qkv_rows(u, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    per_head: tl.constexpr = HEAD_DIM // 2 // HALF
    head = u // per_head
    d = (u % per_head) * HALF + tl.arange(0, HALF)
    return head, d, head * HEAD_DIM + d


@triton.jit
def _prefetch_phase(phase: tl.constexpr, first, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN: tl.constexpr,
                    INTER: tl.constexpr, HEAD_DIM: tl.constexpr, QKV_UNITS: tl.constexpr, QKV_HALF: tl.constexpr,
                    O_ROWS: tl.constexpr, GU_HALF: tl.constexpr, DOWN_ROWS: tl.constexpr, AHEAD: tl.constexpr,
                    LINE: tl.constexpr, LINES_H: tl.constexpr, LINES_I: tl.constexpr):
    """L2 prefetch of this program's units first + k * programs of `phase`, k < AHEAD (those that exist)."""
    for k in tl.static_range(AHEAD):
        u = first + k * programs
        if phase == 0:
            if u < QKV_UNITS:
                _, _, rows = _qkv_rows(u, HEAD_DIM, QKV_HALF)
                _prefetch_rows(w_qkv, rows, HIDDEN, LINE, LINES_H)
                _prefetch_rows(w_qkv, rows + HEAD_DIM // 2, HIDDEN, LINE, LINES_H)
        elif phase == 2:
            if u < HIDDEN // O_ROWS:
                _prefetch_rows(w_o, u * O_ROWS + tl.arange(0, O_ROWS), HIDDEN, LINE, LINES_H)
        elif phase == 3:
            if u < INTER // GU_HALF:
                i = u * GU_HALF + tl.arange(0, GU_HALF)
                _prefetch_rows(w_gu, i, HIDDEN, LINE, LINES_H)
                _prefetch_rows(w_gu, i + INTER, HIDDEN, LINE, LINES_H)
        elif phase == 4:
            if u < HIDDEN // DOWN_ROWS:
                _prefetch_rows(w_down, u * DOWN_ROWS + tl.arange(0, DOWN_ROWS), INTER, LINE, LINES_I)


@triton.jit
def layer_kernel(h_ptr, in_norm_ptr, post_norm_ptr, eps, w_qkv, s_qkv, w_o, s_o, w_gu, s_gu, w_down, s_down,
                 cos_ptr, sin_ptr, column_ptr, q_ptr, attended_ptr, act_ptr, k_ptr, v_ptr, cache_stride, mask_ptr,
                 parts_ptr, stats_ptr, arrivals_ptr, counter_ptr, scale,
                 HIDDEN: tl.constexpr, HIDDEN_PAD: tl.constexpr, INTER: tl.constexpr, INTER_PAD: tl.constexpr,
                 HEAD_DIM: tl.constexpr, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
                 COLUMNS: tl.constexpr, SPLIT: tl.constexpr, SPLITS: tl.constexpr, BLOCK_T: tl.constexpr,
                 GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, LINES: tl.constexpr,
                 QKV_HALF: tl.constexpr, O_ROWS: tl.constexpr, GU_HALF: tl.constexpr, DOWN_ROWS: tl.constexpr,
                 AHEAD: tl.constexpr, LINE: tl.constexpr, LINES_H: tl.constexpr, LINES_I: tl.constexpr,
                 WEIGHTS: tl.constexpr, DECODE: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr,
                 DOUBLE: tl.constexpr, PHASE: tl.constexpr):
    """The layer for one row. PHASE -1: every phase, grid barriers between them; 0-4: that phase alone."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    pid, programs = tl.program_id(0), tl.num_programs(0)
    QKV_UNITS: tl.constexpr = (HEADS + 2 * KV_HEADS) * HEAD_DIM // (2 * QKV_HALF)
    ALL: tl.constexpr = PHASE == -1
    if ALL and PREFETCH:
        _prefetch_phase(0, pid, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN, INTER, HEAD_DIM, QKV_UNITS,
                        QKV_HALF, O_ROWS, GU_HALF, DOWN_ROWS, AHEAD, LINE, LINES_H, LINES_I)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()

    if ALL or PHASE == 0:  # q/k/v of the input-normed row, RoPE, k and v into the cache column
        x, x_scale = _input(_rms_normed(h_ptr, in_norm_ptr, eps, HIDDEN, HIDDEN_PAD, dtype), WEIGHTS)
        column = tl.load(column_ptr)
        if DOUBLE:
            next_first, next_second = _qkv_tiles(w_qkv, pid, QKV_UNITS, HIDDEN, HIDDEN_PAD, HEAD_DIM, QKV_HALF)
        for u in range(pid, QKV_UNITS, programs):
            if PREFETCH:
                _prefetch_phase(0, u + AHEAD * programs, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN, INTER,
                                HEAD_DIM, QKV_UNITS, QKV_HALF, O_ROWS, GU_HALF, DOWN_ROWS, 1, LINE, LINES_H, LINES_I)
            if DOUBLE:
                w_first, w_second = next_first, next_second
                next_first, next_second = _qkv_tiles(w_qkv, u + programs, QKV_UNITS, HIDDEN, HIDDEN_PAD, HEAD_DIM,
                                                     QKV_HALF)
            else:
                w_first, w_second = _qkv_tiles(w_qkv, u, QKV_UNITS, HIDDEN, HIDDEN_PAD, HEAD_DIM, QKV_HALF)
            head, d, rows = _qkv_rows(u, HEAD_DIM, QKV_HALF)
            first = _product(w_first, x, x_scale, s_qkv, rows, WEIGHTS, DECODE, dtype)
            second = _product(w_second, x, x_scale, s_qkv, rows + HEAD_DIM // 2, WEIGHTS, DECODE, dtype)
            qkv_store(first, second, head, d, cos_ptr, sin_ptr, column, q_ptr, k_ptr, v_ptr, cache_stride, HEAD_DIM,
                      HEADS, KV_HEADS, dtype)
    if ALL:
        if PREFETCH:
            _prefetch_phase(2, pid, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN, INTER, HEAD_DIM, QKV_UNITS,
                            QKV_HALF, O_ROWS, GU_HALF, DOWN_ROWS, AHEAD, LINE, LINES_H, LINES_I)
        _grid_barrier(counter_ptr, programs)

    if ALL or PHASE == 1:  # attention, a (key/value head, split) unit at a time
        for unit in range(pid, KV_HEADS * SPLITS, programs):
            attention_split(unit // SPLITS, unit % SPLITS, q_ptr, k_ptr, v_ptr, mask_ptr, parts_ptr, stats_ptr,
                            arrivals_ptr, attended_ptr, scale, cache_stride, COLUMNS, SPLIT, SPLITS, BLOCK_T,
                            HEAD_DIM, GROUP, GROUP_PAD, ".cg")
    if ALL:
        _grid_barrier(counter_ptr, 2 * programs)

    if ALL or PHASE == 2:  # h += o @ attended
        x, x_scale = _input(_row_cg(attended_ptr, HIDDEN, HIDDEN_PAD).to(tl.float32), WEIGHTS)
        _residual_phase(w_o, s_o, h_ptr, x, x_scale, pid, programs, HIDDEN, HIDDEN, HIDDEN_PAD, O_ROWS, WEIGHTS,
                        DECODE, DOUBLE, PREFETCH, AHEAD, LINE, LINES_H)
    if ALL:
        if PREFETCH:
            _prefetch_phase(3, pid, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN, INTER, HEAD_DIM, QKV_UNITS,
                            QKV_HALF, O_ROWS, GU_HALF, DOWN_ROWS, AHEAD, LINE, LINES_H, LINES_I)
        _grid_barrier(counter_ptr, 3 * programs)

    if ALL or PHASE == 3:  # act = SiLU(gate) * up of the post-normed row
        x, x_scale = _input(_rms_normed_cg(h_ptr, post_norm_ptr, eps, HIDDEN, HIDDEN_PAD, dtype), WEIGHTS)
        GU_UNITS: tl.constexpr = INTER // GU_HALF
        if DOUBLE:
            next_gate, next_up = _gate_up_tiles(w_gu, pid, GU_UNITS, INTER, HIDDEN, HIDDEN_PAD, GU_HALF)
        for u in range(pid, GU_UNITS, programs):
            if PREFETCH:
                _prefetch_phase(3, u + AHEAD * programs, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN, INTER,
                                HEAD_DIM, QKV_UNITS, QKV_HALF, O_ROWS, GU_HALF, DOWN_ROWS, 1, LINE, LINES_H, LINES_I)
            if DOUBLE:
                w_gate, w_up = next_gate, next_up
                next_gate, next_up = _gate_up_tiles(w_gu, u + programs, GU_UNITS, INTER, HIDDEN, HIDDEN_PAD, GU_HALF)
            else:
                w_gate, w_up = _gate_up_tiles(w_gu, u, GU_UNITS, INTER, HIDDEN, HIDDEN_PAD, GU_HALF)
            i = u * GU_HALF + tl.arange(0, GU_HALF)
            gate = _product(w_gate, x, x_scale, s_gu, i, WEIGHTS, DECODE, dtype)
            up = _product(w_up, x, x_scale, s_gu, i + INTER, WEIGHTS, DECODE, dtype)
            silu = _rounded(gate / (1.0 + tl.exp(-gate)), dtype)
            tl.store(act_ptr + i, (silu * up).to(dtype))
    if ALL:
        if PREFETCH:
            _prefetch_phase(4, pid, pid, programs, w_qkv, w_o, w_gu, w_down, HIDDEN, INTER, HEAD_DIM, QKV_UNITS,
                            QKV_HALF, O_ROWS, GU_HALF, DOWN_ROWS, AHEAD, LINE, LINES_H, LINES_I)
        _grid_barrier(counter_ptr, 4 * programs)

    if ALL or PHASE == 4:  # h += down @ act
        x, x_scale = _input(_row_cg(act_ptr, INTER, INTER_PAD).to(tl.float32), WEIGHTS)
        _residual_phase(w_down, s_down, h_ptr, x, x_scale, pid, programs, HIDDEN, INTER, INTER_PAD, DOWN_ROWS,
                        WEIGHTS, DECODE, DOUBLE, PREFETCH, AHEAD, LINE, LINES_I)


@triton.jit
def _tile_if(w_ptr, rows, valid, K: tl.constexpr, K_PAD: tl.constexpr):
    """one_row._tile, or zeros where not `valid` (a unit past the last)."""
    cols = tl.arange(0, K_PAD)
    return tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=((cols < K) & valid)[None, :], other=0)


@triton.jit
def _qkv_tiles(w_ptr, u, UNITS: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
               HALF: tl.constexpr):
    _, _, rows = _qkv_rows(u, HEAD_DIM, HALF)
    return _tile_if(w_ptr, rows, u < UNITS, K, K_PAD), _tile_if(w_ptr, rows + HEAD_DIM // 2, u < UNITS, K, K_PAD)


@triton.jit
def _gate_up_tiles(w_ptr, u, UNITS: tl.constexpr, INTER: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
                   HALF: tl.constexpr):
    i = u * HALF + tl.arange(0, HALF)
    return _tile_if(w_ptr, i, u < UNITS, K, K_PAD), _tile_if(w_ptr, i + INTER, u < UNITS, K, K_PAD)


@triton.jit
def _residual_phase(w_ptr, s_ptr, h_ptr, x, x_scale, pid, programs, N: tl.constexpr, K: tl.constexpr,
                    K_PAD: tl.constexpr, ROWS: tl.constexpr, WEIGHTS: tl.constexpr, DECODE: tl.constexpr,
                    DOUBLE: tl.constexpr, PREFETCH: tl.constexpr, AHEAD: tl.constexpr, LINE: tl.constexpr,
                    LINES: tl.constexpr):
    """h[rows] += W[rows] @ x, ROWS rows a unit, this program's units (with DOUBLE the next unit's tile loaded
    before this one's product)."""
    dtype: tl.constexpr = h_ptr.dtype.element_ty
    UNITS: tl.constexpr = N // ROWS
    r = tl.arange(0, ROWS)
    if DOUBLE:
        next_tile = _tile_if(w_ptr, pid * ROWS + r, pid < UNITS, K, K_PAD)
    for u in range(pid, UNITS, programs):
        rows = u * ROWS + r
        if PREFETCH:
            if u + AHEAD * programs < UNITS:
                _prefetch_rows(w_ptr, rows + AHEAD * programs * ROWS, K, LINE, LINES)
        if DOUBLE:
            w = next_tile
            next_tile = _tile_if(w_ptr, rows + programs * ROWS, u + programs < UNITS, K, K_PAD)
        else:
            w = _tile(w_ptr, rows, K, K_PAD)
        out = _product(w, x, x_scale, s_ptr, rows, WEIGHTS, DECODE, dtype)
        tl.store(h_ptr + rows, (tl.load(h_ptr + rows, cache_modifier=".cg").to(tl.float32) + out).to(dtype))


@triton.jit
def _row_cg(x_ptr, K: tl.constexpr, K_PAD: tl.constexpr):
    """A row another program wrote in this launch, read through L2 (L1 is not coherent between SMs)."""
    cols = tl.arange(0, K_PAD)
    return tl.load(x_ptr + cols, mask=cols < K, other=0.0, cache_modifier=".cg")


@triton.jit
def _rms_normed_cg(h_ptr, norm_ptr, eps, K: tl.constexpr, K_PAD: tl.constexpr, dtype: tl.constexpr):
    h = _row_cg(h_ptr, K, K_PAD).to(tl.float32)
    scaled = _rounded(h * tl.rsqrt(tl.sum(h * h, axis=0) / K + eps), dtype)
    return _rounded(scaled * _row(norm_ptr, K, K_PAD).to(tl.float32), dtype)


def register_cap(settings: dict) -> dict:
    """Several programs per SM: registers capped so that they fit (65536 an SM)."""
    per_sm, warps = settings["PER_SM"], settings["WARPS"]
    return {"maxnreg": min(255, 65536 // (32 * warps * per_sm) // 8 * 8)} if per_sm > 1 else {}


class LayerKernelLayers(one_row.OneRowLayers):
    """one_row.OneRowLayers with each layer one launch of layer_kernel (or, split, one per phase)."""

    def __init__(self, network, cfg, settings: dict | None = None, split_phases: bool = False):
        super().__init__(network, cfg)
        self.settings = SETTINGS | (settings or {})
        self.split_phases = split_phases
        device = network.inv_freq.device
        self.sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 3
        self.programs = self.sms * self.settings["PER_SM"]
        self.counters = torch.zeros(len(self.layers), dtype=torch.int32, device=device)
        self.prefetch = device.type == "cuda" and self.settings["AHEAD"] > 0
        if self.settings["ATTENTION_BLOCK"]:
            self.attention_block = self.settings["ATTENTION_BLOCK"]
        self.checked = False

    def _run(self, h, cos, sin, column, caches, mask) -> torch.Tensor:
        cfg, s = self.cfg, self.settings
        heads, kv_heads, head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q, attended = h.new_empty(heads * head_dim), h.new_empty(heads * head_dim)
        act = h.new_empty(cfg.intermediate_size)
        constants = attention_constants(cfg, caches[0][0].shape[2], self.attention_block, h.element_size())
        splits, group_pad = constants["SPLITS"], constants["GROUP_PAD"]
        parts = q.new_empty(kv_heads * splits * group_pad * head_dim, dtype=torch.float32)
        stats = q.new_empty(kv_heads * splits * group_pad * 2, dtype=torch.float32)
        first = next(layer for layer in self.layers if layer)
        item = first.qkv.weight.element_size()
        line = 128 // item
        hidden, inter = cfg.hidden_size, cfg.intermediate_size
        self.counters.zero_()
        launch = {"launch_pdl": True} if self.pdl else {}
        for index, (weights, (cache_k, cache_v)) in enumerate(zip(self.layers, caches)):
            if weights is None:
                continue
            args = (h, weights.input_norm, weights.post_norm, cfg.rms_norm_eps, *weights.qkv.args()[:2],
                    *weights.o.args()[:2], *weights.gate_up.args()[:2], *weights.down.args()[:2], cos, sin, column,
                    q, attended, act, cache_k, cache_v, cache_k.stride(1), mask.reshape(-1), parts, stats,
                    self.arrivals, self.counters[index:], head_dim ** -0.5)
            consts = dict(HIDDEN=hidden, HIDDEN_PAD=triton.next_power_of_2(hidden), INTER=inter,
                          INTER_PAD=triton.next_power_of_2(inter), HEAD_DIM=head_dim, HEADS=heads,
                          KV_HEADS=kv_heads, COLUMNS=constants["COLUMNS"], SPLIT=constants["SPLIT"], SPLITS=splits,
                          BLOCK_T=constants["BLOCK_T"], GROUP=constants["GROUP"], GROUP_PAD=group_pad,
                          LINES=constants["LINES"], QKV_HALF=s["QKV_HALF"], O_ROWS=s["O_ROWS"],
                          GU_HALF=s["GATE_UP_HALF"], DOWN_ROWS=s["DOWN_ROWS"], AHEAD=s["AHEAD"], LINE=line,
                          LINES_H=triton.next_power_of_2(triton.cdiv(hidden, line)),
                          LINES_I=triton.next_power_of_2(triton.cdiv(inter, line)), WEIGHTS=first.qkv.kind,
                          DECODE=self.decode, PREFETCH=self.prefetch, DOUBLE=s["DOUBLE"], num_warps=s["WARPS"],
                          num_stages=one_row.ATTENTION_STAGES, **register_cap(s))
            if not self.split_phases and not self.checked:
                self._check_resident(args, consts, launch)
            if self.split_phases:
                for phase in range(PHASES):
                    layer_kernel[(self.programs,)](*args, PDL=False, PHASE=phase, **consts)
            else:
                layer_kernel[(self.programs,)](*args, PDL=self.pdl, PHASE=-1, **consts, **launch)
        return h

    def _check_resident(self, args, consts, launch) -> None:
        """Refuses a launch whose programs cannot all be resident at once (its grid barriers would never open)."""
        kernel = layer_kernel.warmup(*args, PDL=self.pdl, PHASE=-1, grid=(self.programs,), **consts, **launch)
        kernel._init_handles()
        warps, per_sm = consts["num_warps"], self.settings["PER_SM"]
        fits = {"registers": kernel.n_regs * 32 * warps * per_sm <= 65536,
                "shared memory": kernel.metadata.shared * per_sm <= 227 * 1024, "threads": warps * 32 * per_sm <= 2048}
        self.resident = {"registers": kernel.n_regs, "spills": kernel.n_spills, "shared": kernel.metadata.shared}
        if not all(fits.values()):
            raise RuntimeError(f"{per_sm} programs per SM do not fit: {self.resident}")
        self.checked = True


def layers_output(layers, backend, columns: int, seed: int = 0) -> tuple[torch.Tensor, list]:
    """h after `layers` for a random row over random caches (the same for every call with one seed)."""
    cfg, device = backend.config, backend.device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    act_dtype = next(layer for layer in layers.layers if layer).input_norm.dtype

    def random(*shape):
        return torch.randn(*shape, generator=generator).to(device, act_dtype)

    h = random(1, 1, cfg.hidden_size)
    caches = [(random(1, cfg.num_kv_heads, columns, cfg.head_dim), random(1, cfg.num_kv_heads, columns, cfg.head_dim))
              for _ in layers.layers]
    position = columns // 3
    angles = position * torch.cat([backend.network.inv_freq.float().cpu()] * 2)
    cos, sin = (angles.cos().to(device, act_dtype).reshape(1, 1, 1, -1), angles.sin().to(device, act_dtype)
                .reshape(1, 1, 1, -1))
    mask = (torch.arange(columns) <= position).to(device).reshape(1, 1, 1, -1)
    column = torch.tensor([position], device=device)
    out = layers.run(h, cos, sin, column, caches, mask)
    return out.float().cpu(), [(k.float().cpu(), v.float().cpu()) for k, v in caches]


def compare(reference, other) -> dict:
    (h_ref, caches_ref), (h, caches) = reference, other
    cache_error = max(((a - b).abs().max().item() for pair_ref, pair in zip(caches_ref, caches)
                       for a, b in zip(pair_ref, pair)), default=0.0)
    return {"h_rel_l2": ((h - h_ref).norm() / h_ref.norm()).item(), "cache_max_abs": cache_error}


def ptxas_report(weights: str, arch: int, variants: list[dict], columns: int) -> dict:
    """Registers, spills and shared memory of layer_kernel at the 3B shape compiled for sm_<arch>, per variant."""
    from one_row_registers import WEIGHT_TYPES, ptxas_usage
    from higgs_bench.model.random_checkpoint import make_config

    cfg = make_config("higgs-v2-3b")
    weight, scale, item = WEIGHT_TYPES["16-bit" if weights == "bf16" else weights]
    pointers = {"w_qkv": weight, "w_o": weight, "w_gu": weight, "w_down": weight, "s_qkv": scale, "s_o": scale,
                "s_gu": scale, "s_down": scale, "eps": "fp32", "scale": "fp32", "cache_stride": "i32",
                "cos_ptr": "*bf16", "sin_ptr": "*bf16", "column_ptr": "*i64", "mask_ptr": "*i1",
                "parts_ptr": "*fp32", "stats_ptr": "*fp32", "arrivals_ptr": "*i32", "counter_ptr": "*i32"}
    types = {name: "constexpr" if name.isupper() else pointers.get(name, "*bf16") for name in layer_kernel.arg_names}
    report = {}
    for variant in variants:
        s = SETTINGS | variant
        block = s["ATTENTION_BLOCK"] or one_row.attention_block_within(cfg.head_dim, 2, 227 * 1024)
        attention = attention_constants(cfg, columns, block, 2)
        line = 128 // item
        constants = dict(HIDDEN=cfg.hidden_size, HIDDEN_PAD=4096, INTER=cfg.intermediate_size, INTER_PAD=8192,
                         HEAD_DIM=cfg.head_dim, HEADS=cfg.num_heads, KV_HEADS=cfg.num_kv_heads,
                         **{k: attention[k] for k in ("COLUMNS", "SPLIT", "SPLITS", "BLOCK_T", "GROUP", "GROUP_PAD",
                                                      "LINES")},
                         QKV_HALF=s["QKV_HALF"], O_ROWS=s["O_ROWS"], GU_HALF=s["GATE_UP_HALF"],
                         DOWN_ROWS=s["DOWN_ROWS"], AHEAD=s["AHEAD"], LINE=line,
                         LINES_H=triton.next_power_of_2(triton.cdiv(cfg.hidden_size, line)),
                         LINES_I=triton.next_power_of_2(triton.cdiv(cfg.intermediate_size, line)),
                         WEIGHTS="16-bit" if weights == "bf16" else weights, DECODE=True, PDL=True,
                         PREFETCH=s["AHEAD"] > 0, DOUBLE=s["DOUBLE"], PHASE=-1)
        registers, spilled, shared = ptxas_usage(layer_kernel, types, constants,
                                                 {"num_warps": s["WARPS"], "num_stages": one_row.ATTENTION_STAGES}
                                                 | register_cap(s),
                                                 arch)
        report[json.dumps(variant)] = {"registers": registers, "spilled": spilled, "shared_kb": shared / 1024}
        print(json.dumps(variant), report[json.dumps(variant)], flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", choices=("bf16", "int8", "fp8"), default="int8")
    parser.add_argument("--columns", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", type=json.loads, default=[{}])
    parser.add_argument("--check", action="store_true", help="each phase a launch (Triton's interpreter, a CPU)")
    parser.add_argument("--ptxas", type=int, help="compile for this architecture only (no GPU needed)")
    args = parser.parse_args()
    if args.ptxas:
        report = ptxas_report(args.weights, args.ptxas, args.variants, args.columns)
        args.out.write_text(json.dumps(report, indent=1))
        return

    from higgs_bench.backends.pytorch.backend import Speed, TorchBackend
    from higgs_bench.backends.pytorch.engine import load_engine

    quantised = None if args.weights == "bf16" else args.weights
    if args.check:  # float16: the interpreter's bfloat16 conversions truncate (tests/test_one_row_kernels.py)
        backend = TorchBackend.from_checkpoint(args.ckpt, dtype=torch.float16, quantised=quantised, speed=Speed(
            max_seq_len=args.columns, one_row_kernels=True))
    else:
        speed = Speed(cuda_graph=True, compile_mode="default", max_seq_len=args.columns, one_row_kernels=True)
        backend, _ = load_engine(args.ckpt, torch.device("cuda"), torch.bfloat16, quantised, speed,
                                 [(1, args.columns)])
    device = backend.device
    reference = layers_output(one_row.OneRowLayers(backend.network, backend.config), backend, args.columns)
    record = {"weights": args.weights, "columns": args.columns, "variants": {}}
    if args.check:
        for settings in args.variants:
            layers = LayerKernelLayers(backend.network, backend.config, settings, split_phases=True)
            record["variants"][json.dumps(settings)] = compare(reference, layers_output(layers, backend, args.columns))
        args.out.write_text(json.dumps(record, indent=1))
        print(json.dumps(record, indent=1))
        return

    from decode_step_gpu import TEXTS, median
    from one_row_gpu import timed
    from higgs_bench.bench.floor import floor_report
    from higgs_bench.generate.inputs import expand_prompt
    from higgs_bench.model.prompt import encode_messages, tts_messages
    from higgs_bench.model.tokenizer import load_tokenizer

    prompt = expand_prompt(encode_messages(load_tokenizer(args.ckpt), tts_messages(TEXTS[0])), backend.config)
    record |= {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}
    built = backend.one_row
    chosen = {"one_row.py": built} | {json.dumps(s): LayerKernelLayers(backend.network, backend.config, s)
                                      for s in args.variants}
    rounds, errors = {name: [] for name in chosen}, {}
    for name, layers in chosen.items():
        if name != "one_row.py":
            try:
                record["variants"][name] = compare(reference, layers_output(layers, backend, args.columns))
                print(name, record["variants"][name], flush=True)
            except Exception as error:
                errors[name] = f"{type(error).__name__}: {error}"[:2000]
    for _ in range(args.rounds):
        for name, layers in chosen.items():
            if name in errors:
                continue
            backend.one_row = layers
            try:
                rounds[name].append(timed(backend, prompt, args.columns))
            except Exception as error:
                errors[name] = f"{type(error).__name__}: {error}"[:2000]
    backend.one_row = built
    step = {name: median(ms) for name, ms in rounds.items() if ms}
    record |= {"step_ms": step, "step_ms_rounds": rounds, "errors": errors,
               "floor": floor_report(backend.config, 2, quantised, device,
                                     step.get("one_row.py", 1.0))}
    for name, error in errors.items():
        print(f"{name:60s} failed: {error}")
    for name, ms in step.items():
        print(f"{name:60s} {ms:.3f} ms (rounds {min(rounds[name]):.3f}-{max(rounds[name]):.3f})")
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
