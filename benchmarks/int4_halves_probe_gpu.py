"""int4 one-row products in a layout of our own: can a Triton GEMV read int4 weights near copy bandwidth, where
torch's tinygemm (int4's one-row step today: 1.73 ms, 5.1x its floor) and two Triton kernels over other layouts
did not (docs/performance.md, thirteenth and sixteenth sessions)? Measured on an H200 (twenty-third session): no,
its chain of 112 products took 1.33 ms against tinygemm's 1.20 (floor 0.35).

    python benchmarks/int4_halves_probe_gpu.py OUT.json
    python benchmarks/int4_halves_probe_gpu.py OUT.json --check   # tiny shapes, Triton's interpreter, on a CPU

The layout ("halves"): byte j of a weight row holds input j in its low nibble and input j + K/2 in its high
nibble, so that both nibbles of a tile meet contiguous inputs and the tile stays [rows, groups, 128 bytes] with
one contiguous axis; each group of 128 inputs has a scale and a zero point, the weight being (q - 8) * scale +
zero as tinygemm's. A program loads its whole tile, makes each nibble a float by bits (beside 2^23 in a float,
less 2^23 + 8), sums each group against its inputs, and weighs the sums by the scales. Compiled for sm_90 without a
GPU (Triton's TTGIR), its layout conversions are of the inputs, the groups' sums and the output only (7; the
sixteenth session's kernel over tinygemm's words had 18, and 35 barriers); none converts the weight tile.

Per product kind as a chain of 28 products (each reading the one before's output) and as the whole chain of 112,
each in a CUDA graph: tinygemm over torch's packing of the same values, and this kernel at each block, without PDL
and with PDL (waiting first, as one_row.py's kernels do). Floors are the int4 bytes (and the groups' scales and
zeros) at the copy bandwidth measured in the same run.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
import triton.language as tl

from gemv_pdl_probe_gpu import LAYERS, chain, replay_us

KINDS = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}  # (N, K)
TINY_KINDS = {"qkv": (40, 768), "o": (24, 256), "gate_up": (64, 512), "down": (24, 1024)}  # 3, 1, 2, 4 groups a half
GROUP = 128
BLOCK_NS, WARPS = (2, 4, 8, 16), (4, 8)
MAX_TILE_BYTES_PER_THREAD = 256  # a program holds its whole weight tile in registers (one_row.py's bound)
INNER_K_TILES = 8  # tinygemm's packing, as torchao packs int4 weights


@triton.jit
def int4_halves_kernel(w_ptr, scale_ptr, zero_ptr, x_ptr, y_ptr, K: tl.constexpr, GROUP: tl.constexpr,
                       GROUPS_PAD: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """y[rows] = W[rows] @ x for this program's BLOCK_N rows; W in the halves layout [N, K/2] bytes, scales and
    zeros [N, K/GROUP] (groups of the first half, then of the second)."""
    HALF: tl.constexpr = K // 2
    HALF_GROUPS: tl.constexpr = HALF // GROUP
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    g, c = tl.arange(0, GROUPS_PAD), tl.arange(0, GROUP)
    inside = g < HALF_GROUPS
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    b = tl.load(w_ptr + rows[:, None, None] * HALF + g[None, :, None] * GROUP + c[None, None, :],
                mask=inside[None, :, None], other=0).to(tl.int32)
    x_at = g[:, None] * GROUP + c[None, :]
    x_low = tl.load(x_ptr + x_at, mask=inside[:, None], other=0.0).to(tl.float32)
    x_high = tl.load(x_ptr + HALF + x_at, mask=inside[:, None], other=0.0).to(tl.float32)
    low = ((b & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0  # q - 8, exactly
    high = (((b >> 4) & 15) | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0
    sums_low = tl.sum(low * x_low[None, :, :], axis=2)
    sums_high = tl.sum(high * x_high[None, :, :], axis=2)
    at, in_groups = rows[:, None] * (2 * HALF_GROUPS) + g[None, :], inside[None, :]
    scale_low = tl.load(scale_ptr + at, mask=in_groups, other=0.0).to(tl.float32)
    scale_high = tl.load(scale_ptr + at + HALF_GROUPS, mask=in_groups, other=0.0).to(tl.float32)
    zero_low = tl.load(zero_ptr + at, mask=in_groups, other=0.0).to(tl.float32)
    zero_high = tl.load(zero_ptr + at + HALF_GROUPS, mask=in_groups, other=0.0).to(tl.float32)
    x_sums_low, x_sums_high = tl.sum(x_low, axis=1), tl.sum(x_high, axis=1)
    y = tl.sum(scale_low * sums_low + zero_low * x_sums_low[None, :]
               + scale_high * sums_high + zero_high * x_sums_high[None, :], axis=1)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty))


@dataclass
class Int4Weight:
    """One int4 weight [N, K]: its values q (0..15, uint8 [N, K]), scales and zeros [N, K / GROUP] (bf16), in the
    halves layout (`halves`) and, on CUDA, in tinygemm's (`tinygemm`, `scale_and_zero`)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    halves: torch.Tensor
    tinygemm: torch.Tensor | None = None
    scale_and_zero: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)

    def dequantised(self) -> torch.Tensor:
        """W in float32: (q - 8) * scale + zero, per group."""
        per_input = lambda t: t.float().repeat_interleave(GROUP, dim=1)  # noqa: E731
        return (self.q.float() - 8) * per_input(self.scale) + per_input(self.zero)


def random_int4(n: int, k: int, device: torch.device) -> Int4Weight:
    """Random values, with scales that keep a chain's activations near 1 (112 products in bf16)."""
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, device=device)
    scale = ((torch.rand(n, k // GROUP, device=device) + 1) / (8 * k ** 0.5)).to(torch.bfloat16)
    zero = (torch.randn(n, k // GROUP, device=device) / (8 * k ** 0.5)).to(torch.bfloat16)
    halves = q[:, :k // 2] | (q[:, k // 2:] << 4)
    weight = Int4Weight(q, scale, zero, halves.contiguous())
    if device.type == "cuda":  # torch's packing takes input 2i in the high nibble, 2i + 1 in the low
        pairs = (q[:, 0::2] << 4) | q[:, 1::2]
        weight.tinygemm = torch.ops.aten._convert_weight_to_int4pack(pairs.contiguous(), INNER_K_TILES)
        weight.scale_and_zero = torch.stack([scale.t(), zero.t()], dim=-1).contiguous()  # [K / GROUP, N, 2]
    return weight


def halves_product(w: Int4Weight, x: torch.Tensor, y: torch.Tensor, block_n: int, warps: int, pdl: bool) -> None:
    n, k = w.shape
    int4_halves_kernel[(n // block_n,)](w.halves, w.scale, w.zero, x, y, K=k, GROUP=GROUP,
                                        GROUPS_PAD=triton.next_power_of_2(k // 2 // GROUP), BLOCK_N=block_n,
                                        PDL=pdl, num_warps=warps, **({"launch_pdl": True} if pdl else {}))


def tinygemm_product(kind, w: Int4Weight, x, y) -> None:
    y[None].copy_(torch.ops.aten._weight_int4pack_mm(x[None], w.tinygemm, GROUP, w.scale_and_zero))


def configs(n: int, k: int) -> list[tuple[int, int]]:
    """(BLOCK_N, warps) whose tile (half a byte a weight) fits the register budget and divides the rows."""
    return [(b, w) for b in BLOCK_NS for w in WARPS if n % b == 0 and b * k // 2 <= MAX_TILE_BYTES_PER_THREAD * 32 * w]


def check(kinds: dict, device: torch.device, pdl: bool) -> dict:
    """Each kind's product against the dequantised weights in float32 (and tinygemm's on CUDA): the largest
    relative error of each."""
    errors = {}
    for kind, (n, k) in kinds.items():
        w = random_int4(n, k, device)
        x = torch.randn(k, device=device, dtype=torch.bfloat16)
        reference = w.dequantised() @ x.float()
        for block_n, warps in configs(n, k)[:2]:
            y = torch.empty(n, device=device, dtype=torch.bfloat16)
            halves_product(w, x, y, block_n, warps, pdl)
            errors[f"{kind}/{block_n}x{warps}"] = error = ((y.float() - reference).norm() / reference.norm()).item()
            if error > 1e-2:
                raise SystemExit(f"{kind} {block_n}x{warps}: relative error {error:.3g}")
        if w.tinygemm is not None:  # reported, not held: its timing does not depend on the values
            y = torch.empty(n, device=device, dtype=torch.bfloat16)
            tinygemm_product(kind, w, x, y)
            errors[f"{kind}/tinygemm"] = ((y.float() - reference).norm() / reference.norm()).item()
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true", help="tiny shapes through Triton's interpreter")
    args = parser.parse_args()
    if args.check:
        errors = check(TINY_KINDS, torch.device("cpu"), pdl=False)
        args.out.write_text(json.dumps({"check": errors}, indent=1))
        print(f"{len(errors)} int4 GEMVs match float32 products")
        return

    from higgs_bench.bench.floor import copy_bandwidth

    device = torch.device("cuda")
    record = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "check": check(KINDS, device, pdl=True), "copy_bandwidth_tb_s": copy_bandwidth(device) / 1e12,
              "kinds": {}, "chain": {}}
    bandwidth = record["copy_bandwidth_tb_s"] * 1e12
    ws = {kind: [random_int4(n, k, device) for _ in range(LAYERS)] for kind, (n, k) in KINDS.items()}
    best = {"no_pdl": {}, "pdl": {}}
    for kind, (n, k) in KINDS.items():
        bytes_per_layer = n * k // 2 + 2 * n * (k // GROUP) * 2
        run = chain({kind: ws[kind]}, [kind], device)
        row = {"floor_us": LAYERS * bytes_per_layer / bandwidth * 1e6,
               "tinygemm_us": replay_us(lambda: run(tinygemm_product)), "configs": {}}
        for mode, pdl in (("no_pdl", False), ("pdl", True)):
            for block_n, warps in configs(n, k):
                us = replay_us(lambda: run(lambda _, w, x, y: halves_product(w, x, y, block_n, warps, pdl)))
                row["configs"][f"{mode}/{block_n}x{warps}"] = us
                if us < best[mode].get(kind, (None, float("inf")))[1]:
                    best[mode][kind] = ((block_n, warps), us)
            row[f"{mode}_us"] = best[mode][kind][1]
        record["kinds"][kind] = row
        print(f"{kind:8s} floor {row['floor_us']:7.1f} us  tinygemm {row['tinygemm_us']:7.1f}  "
              + "  ".join(f"{m} {row[f'{m}_us']:7.1f} ({best[m][kind][0]})" for m in best), flush=True)

    run = chain(ws, list(KINDS), device)
    record["chain"] = {"floor_us": sum(r["floor_us"] for r in record["kinds"].values()),
                       "tinygemm_us": replay_us(lambda: run(tinygemm_product))}
    for mode, pdl in (("no_pdl", False), ("pdl", True)):
        choice = {kind: config for kind, (config, _) in best[mode].items()}
        record["chain"][f"{mode}_us"] = replay_us(
            lambda: run(lambda kind, w, x, y: halves_product(w, x, y, *choice[kind], pdl)))
        record["chain"][f"{mode}_configs"] = choice
    print("chain of 112: " + "  ".join(f"{key} {value:.1f}" for key, value in record["chain"].items()
                                      if key.endswith("_us")))
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
