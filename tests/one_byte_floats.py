"""A kernel that writes one_row's floats of 256 one-byte weights (tests/test_gpu.py; imported there on CUDA only,
since it brings Triton)."""

import triton
import triton.language as tl

from higgs_bench.backends.pytorch.one_row import _floats


@triton.jit
def floats_kernel(w_ptr, out_ptr, WEIGHTS: tl.constexpr, DECODE: tl.constexpr):
    at = tl.arange(0, 16)[:, None] * 16 + tl.arange(0, 16)[None, :]
    tl.store(out_ptr + at, _floats(tl.load(w_ptr + at), WEIGHTS, DECODE))
