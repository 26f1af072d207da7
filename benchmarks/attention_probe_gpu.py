"""Decode attention of the 3B shape on a GPU: what an fp8 KV cache would save or cost (docs/performance.md).

    python benchmarks/attention_probe_gpu.py OUT.json
    python benchmarks/attention_probe_gpu.py OUT.json --check   # one small shape, eager, on any device

The engine attends with SDPA over a bf16 cache (cuDNN on an H200). SDPA takes one dtype for q, k and v, so an fp8
cache would have to be converted first, which reads and writes more than it saves. FlexAttention's Triton
templates (torch 2.11 on CUDA, `_inductor/kernel/flex/templates/common.py.jinja`) load k and v in their own dtype
and convert them in registers, so through flex an fp8 cache would be read at half the bytes. Per layer, for the
(rows, cache columns) shapes of scenario=standard, each compiled and captured in a CUDA graph: SDPA over bf16 (the
engine), flex over bf16, flex over fp8 k/v (scale 1), and SDPA after converting fp8 k/v to bf16; and the error of
each fp8 form against SDPA over bf16.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from linear_probes_gpu import replay_us  # this folder's scripts run with it on sys.path

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 24, 8, 128, 28  # the 3B backbone (Llama-3.2-3B)
SHAPES = [(1, 512), (4, 512), (16, 512), (64, 512), (4, 2048), (16, 2048)]
FP8 = torch.float8_e4m3fn


def inputs(rows: int, columns: int, device: torch.device) -> dict[str, torch.Tensor]:
    """One decode step's query, a bf16 cache and its fp8 copy, and which columns each row may see."""
    q = torch.randn(rows, HEADS, 1, HEAD_DIM, device=device, dtype=torch.bfloat16)
    k, v = (torch.randn(rows, KV_HEADS, columns, HEAD_DIM, device=device, dtype=torch.bfloat16) for _ in range(2))
    valid = torch.rand(rows, 1, 1, columns, device=device) < 0.9
    valid[..., 0] = True
    return {"q": q, "k": k, "v": v, "k8": k.to(FP8), "v8": v.to(FP8), "valid": valid}


def sdpa(q, k, v, valid):
    return F.scaled_dot_product_attention(q, k, v, valid, enable_gqa=True)


def flex(q, k, v, valid):
    def masked(score, b, h, q_idx, kv_idx):
        return torch.where(valid[b, 0, 0, kv_idx], score, -float("inf"))

    return flex_attention(q, k, v, score_mod=masked, enable_gqa=True)


def sdpa_after_conversion(q, k, v, valid):
    return sdpa(q, k.to(q.dtype), v.to(q.dtype), valid)


FORMS = {  # name: (attention, which cache it reads)
    "sdpa_bf16": (sdpa, ("k", "v")),
    "flex_bf16": (flex, ("k", "v")),
    "flex_fp8": (flex, ("k8", "v8")),
    "sdpa_fp8_converted": (sdpa_after_conversion, ("k8", "v8")),
}


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def measure(rows: int, columns: int, device: torch.device, compiled: bool) -> dict:
    """Each form's output error against SDPA over bf16, and on CUDA its time per layer and per step."""
    x = inputs(rows, columns, device)
    reference = sdpa(x["q"], x["k"], x["v"], x["valid"])
    row = {"rows": rows, "columns": columns}
    for name, (attention, (k, v)) in FORMS.items():
        run = torch.compile(attention, dynamic=False) if compiled else attention
        call = lambda: run(x["q"], x[k], x[v], x["valid"])  # noqa: E731
        result = {"rel_l2_vs_sdpa_bf16": rel_l2(call(), reference),
                  "kv_bytes": x[k].nbytes + x[v].nbytes}
        if device.type == "cuda":
            try:
                us = replay_us(lambda _: call(), None, replays=200)
            except RuntimeError as error:  # e.g. a form that falls back to eager code that cannot be captured
                result["error"] = str(error).splitlines()[0]
                torch.cuda.synchronize()
            else:
                result |= {"us_per_layer": us, "ms_per_step": us * LAYERS / 1000,
                           "kv_read_tb_s": result["kv_bytes"] / us / 1e6}
        row[name] = result
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true", help="one small shape, eager: the forms agree (any device)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes, compiled = ([(2, 64)], False) if args.check else (SHAPES, True)
    if not args.check and device.type != "cuda":
        raise SystemExit("the timings need a CUDA GPU; --check runs the forms on this device")
    torch._dynamo.config.recompile_limit = 64  # flex compiles once per shape and cache dtype: 12 here, default 8
    rows = []
    for batch, columns in shapes:
        rows.append(measure(batch, columns, device, compiled))
        print(json.dumps(rows[-1]), flush=True)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "compiled": compiled, "shapes": rows}
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
