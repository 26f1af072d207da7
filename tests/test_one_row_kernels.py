"""The one-row decode step as Triton kernels (backends/pytorch/one_row.py) computes what the network does. On a CPU
the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET), in float16, whose arithmetic there is
numpy's: each operation rounds as the network's does, and only the products' order of summation differs, so
logits and caches agree to about one float16 step. (The interpreter's bfloat16 conversions truncate, so bfloat16
is checked on a GPU, tests/test_gpu.py.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from higgs_bench.backends.pytorch import int4_one_row, int4_rows, one_byte_rows, one_row
from higgs_bench.backends.pytorch.quantised_linears import Float8Linear, one_row_fp8
from higgs_bench.backends.pytorch.backend import Speed, TorchBackend
from higgs_bench.bench.build import torch_speed
from higgs_bench.errors import ConfigError
from higgs_bench.generate.loop import generate
from tests.parity import GREEDY

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's; on CUDA see tests/test_gpu.py"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:triton")]
FEW_PROGRAMS = {"qkv": (16, 4), "o": (16, 4), "gate_up": (32, 4), "down": (16, 4)}  # the interpreter is slow


def assert_near(mine: torch.Tensor, theirs: torch.Tensor) -> None:
    """Within a few float16 steps everywhere (a wrong head, pair, norm or cache column moves values by ~1)."""
    torch.testing.assert_close(mine.float(), theirs.float(), rtol=4e-3, atol=4e-3)


def backends(checkpoint, max_seq_len=256, quantised=None):
    return [TorchBackend.from_checkpoint(checkpoint, dtype=torch.float16, quantised=quantised,
                                         speed=Speed(max_seq_len=max_seq_len, one_row_kernels=kernels))
            for kernels in (False, True)]


@pytest.mark.parametrize("blocks, columns, split_columns, attention_block, quantised", [
    ("measured", 256, 256, 256, None), ("measured", 256, 256, 64, None), ("measured", 256, 64, 64, None),
    ("few programs", 2048, 64, 64, None), ("measured", 256, 256, 256, "int8")])
def test_one_row_steps_write_the_caches_and_give_the_logits_of_the_eager_step(tiny_hf, prompt_inputs, monkeypatch,
                                                                              blocks, columns, split_columns,
                                                                              attention_block, quantised):
    """Both block tables: the measured one pairs single rows for gate/up and two for RoPE, the other whole halves
    of a head and several gate/up rows per program. Attention reads 256 cache columns in one program per head (one
    block, or 4 blocks rescaled one after another, nothing to combine) or in 4 parts of one block (two of them all
    masked), 2048 in 16 of two blocks. int8: torchao's weight-only int8 linears (quantize.py), each product then
    scaled per row as torchao does."""
    if blocks == "few programs":
        monkeypatch.setattr(one_row, "BLOCKS", FEW_PROGRAMS)
    monkeypatch.setattr(one_row, "ATTENTION_SPLIT_COLUMNS", split_columns)
    monkeypatch.setattr(one_row, "ATTENTION_BLOCK", attention_block)
    eager, kernels = backends(tiny_hf, max_seq_len=2048, quantised=quantised)
    assert all(layer.qkv.scale is not None for layer in kernels.one_row.layers) == (quantised == "int8")
    frame = torch.randint(0, 1024, (1, 8), generator=torch.Generator().manual_seed(0))
    for backend in (eager, kernels):
        backend.prefill(prompt_inputs[2:], columns - len(prompt_inputs[2]) - 10)  # a voice clone: audio positions
    assert kernels.state.key_valid.shape[1] == columns
    for _ in range(3):
        assert_near(kernels.step(frame), eager.step(frame))
    for mine, theirs in zip(kernels.state.caches, eager.state.caches):
        for a, b in zip(mine, theirs):
            assert_near(a, b)
    measured = one_row.INT8_BLOCKS if quantised == "int8" else one_row.BLOCKS
    assert kernels.one_row.blocks == (FEW_PROGRAMS if blocks == "few programs" else measured)  # guard: as asked
    assert kernels.one_row.attention_block == attention_block


def test_the_work_around_the_kernels_compiled_gives_the_same_steps(tiny_hf, prompt_inputs):
    """Engines compiled as the toolkit builds them on CUDA compile the one-row step's work before and after the
    kernels (column marks, embedding, RoPE; final norm, audio head, counters): three steps in a row give the
    uncompiled engine's logits, so the column and position move on and nothing is left out."""
    plain, compiled = (TorchBackend.from_checkpoint(tiny_hf, dtype=torch.float16, speed=Speed(
        max_seq_len=256, compile_mode=mode, one_row_kernels=True)) for mode in (None, "default"))
    assert compiled.one_row_ends != plain.one_row_ends  # guard: the compiled functions ran
    frame = torch.randint(0, 1024, (1, 8), generator=torch.Generator().manual_seed(0))
    for backend in (plain, compiled):
        backend.prefill(prompt_inputs[:1], 20)
    for _ in range(3):
        assert_near(compiled.step(frame), plain.step(frame))
    for name in ("column", "next_position", "key_valid", "key_audio"):  # written in place by compiled graphs
        assert torch.equal(getattr(compiled.state, name), getattr(plain.state, name)), name


def test_greedy_codes_match_with_fast_forward_layers_and_only_one_row_steps_take_the_kernels(
        tiny_fast_forward, prompt_inputs, monkeypatch):
    monkeypatch.setattr(one_row, "BLOCKS", FEW_PROGRAMS)
    eager, kernels = backends(tiny_fast_forward)
    rows_seen = []
    run = kernels.one_row.run
    kernels.one_row.run = lambda h, *rest: rows_seen.append(h.shape[0]) or run(h, *rest)
    assert torch.equal(generate(kernels, prompt_inputs[:1], GREEDY, 14).streams,
                       generate(eager, prompt_inputs[:1], GREEDY, 14).streams)
    assert rows_seen and set(rows_seen) == {1}
    rows_seen.clear()
    generate(kernels, prompt_inputs[:2], GREEDY, 10)
    assert rows_seen == []  # two rows: the network's own layers


def test_an_fp8_product_quantises_its_row_and_scales_as_torchao():
    """The residual kernel with e4m3 weights and per-row scales against quantize.one_row_fp8 (what the compiled
    fp8 engines compute), in float16. 96 inputs, padded to 128 in the kernel. The input row is e4m3 values
    times 2^-6 (its largest 448 * 2^-6), so that its quantisation is exact: the interpreter rounds to fp8 through
    numpy's float16 and may land a value just below a power of two a whole step off; a GPU rounds as torch does
    (tests/test_gpu.py)."""
    generator = torch.Generator().manual_seed(0)
    rows, inputs, padded = 64, 96, 128
    w = torch.randn(rows, inputs, generator=generator)
    scale = w.abs().amax(dim=1, keepdim=True) / 448
    qdata = (w / scale).to(torch.float8_e4m3fn)
    fp8_values = torch.randint(0, 256, (inputs,), generator=generator, dtype=torch.uint8)
    fp8_values[fp8_values % 128 == 127] = 0  # no NaN
    fp8_values[7] = 126  # 448, the largest
    x = (fp8_values.view(torch.float8_e4m3fn).float() / 64).half()
    h = torch.randn(rows, generator=generator).half()
    want = h + one_row_fp8(x[None], qdata, scale)[0]
    product = one_row.Product.of(Float8Linear(inputs, rows, qdata=qdata, scale=scale))
    assert product.kind == "fp8" and product.weight.shape == (rows, inputs)
    w_arg, scale_arg, kind = product.args()
    block, warps = one_row.rows_per_program("o", rows, inputs, 1, weights=kind)
    assert block == 16  # FP8_BLOCKS', twice BLOCKS'
    one_row.residual_kernel[(rows // block,)](x, w_arg, scale_arg, h, K=inputs, K_PAD=padded, BLOCK=block,
                                              WEIGHTS=kind, DECODE=False, PDL=False, num_warps=warps)
    torch.testing.assert_close(h, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("arch", [90, 89, 80])
def test_every_kernel_compiles_for_its_gpu_and_none_spills_registers(tmp_path, arch):
    """benchmarks/one_row_registers.py compiles each kernel as the layers launch it at the 3B shape, for 16-bit,
    int8 and fp8 weights (fp8 from Ada on), with Triton's ptxas (no GPU): Hopper with PDL, Ada and Ampere without
    (`griddepcontrol` is PTX for sm_90 on; launched with it there, every default torch engine failed to build),
    with pointers as aligned as a launch finds them (without, Triton loads a byte or two at a time). A kernel
    that spilled would send its tile through local memory. Run apart: the tool compiles, while this module's
    kernels run in the interpreter. Also the kernels of products of several rows (one_byte_rows.py's, int4_rows.py's)
    at each of their blocks, whose stages' shared memory must fit the GPU's (99 KB per block on Ada), and on Hopper
    int4_one_row.py's Gluon kernel (its programs per SM within shared memory, its registers within their cap)."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "one_row_registers.py"
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, str(script), str(tmp_path / "registers.json"), "--arch", str(arch)], env=env,
                   check=True, capture_output=True)
    table = json.loads((tmp_path / "registers.json").read_text())
    kinds = ("16-bit", "int8", "fp8") if arch >= 89 else ("16-bit", "int8")
    rows = {name for name in table if " rows " in name}
    blocks = one_byte_rows.FEW_ROWS_BLOCKS + one_byte_rows.MANY_ROWS_BLOCKS
    assert len(rows) == len(blocks) * (2 if arch >= 89 else 1) + len(int4_rows.BLOCKS)  # int8's, int4's, fp8's from Ada
    one_row_int4 = {f"int4 one-row {name}{launch}" for name in ("qkv", "o", "gate_up", "down")
                    for launch in ("", " fused")} if arch >= 90 else set()  # as its custom op and the layers launch it
    assert set(table) == {f"{kind} {name}" for kind in kinds for name in ("qkv", "o", "gate_up", "down")} | \
        {"16-bit attention"} | rows | one_row_int4
    assert all(row["spilled"] == 0 for row in table.values()), table
    assert all(table[name]["fits_shared_memory"] for name in rows | one_row_int4), table
    assert all(table[name]["registers"] <= int4_one_row.MAX_REGISTERS for name in one_row_int4), table
    if arch >= 89:
        assert table["fp8 o"]["rows"] == one_row.FP8_BLOCKS["o"][0]  # each kind's table, as the layers take them
    assert table["int8 o"]["rows"] == one_row.INT8_BLOCKS["o"][0]
    assert table["16-bit o"]["rows"] == one_row.BLOCKS["o"][0]


def test_pdl_from_hopper_and_attention_blocks_within_shared_memory():
    assert one_row.programmatic_launch((9, 0)) and not one_row.programmatic_launch((8, 9))
    assert one_row.attention_block_within(128, 2, 227 * 1024) == 256  # H100, H200
    assert one_row.attention_block_within(128, 2, 163 * 1024) == 256  # A100: 128 KB of k and v fit
    assert one_row.attention_block_within(128, 2, 99 * 1024) == 128  # Ada, RTX 30: halved


def test_tiles_stay_within_the_register_budget_and_rows_divide_evenly():
    assert one_row.rows_per_program("o", 3072, 3072, 2) == (8, 8)  # as measured at the 3B shape
    assert one_row.rows_per_program("down", 3072, 8192, 2) == (4, 8)
    block, warps = one_row.rows_per_program("o", 4096, 14336, 2)  # wider inputs: fewer rows per program
    assert block * 16384 * 2 <= one_row.MAX_TILE_BYTES_PER_THREAD * 32 * warps
    assert one_row.rows_per_program("qkv", 6, 64, 2, pair=2) == (2, 4)  # 6 rows: pairs of 2 divide them


@pytest.mark.parametrize("precision, weights", [("fp32", None), ("fp32", "int8")])
def test_the_kernels_refuse_engines_they_do_not_run(tiny_hf, precision, weights):
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    with pytest.raises(ConfigError, match="one_row_kernels runs 16-bit activations with 16-bit, int8 or fp8 weights"
                                          ".*int4 weights from Hopper on"):
        TorchBackend.from_checkpoint(tiny_hf, dtype=dtype, quantised=weights,
                                     speed=Speed(max_seq_len=256, one_row_kernels=True))


def test_engines_take_the_kernels_where_they_apply(compose_cfg, monkeypatch):
    """16-bit, int8 and fp8 engines compiled and captured on CUDA; int4 where int4_one_row.py's kernel runs (Hopper,
    Triton >= 3.6)."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")

    def kernels(device, *overrides):
        return torch_speed(compose_cfg("backend=torch", *overrides), device).one_row_kernels

    monkeypatch.setattr(int4_one_row, "runs_on", lambda device: device.type == "cuda")
    assert all(kernels(cuda, f"precision={precision}") for precision in ("bf16", "fp16", "int8", "fp8", "int4"))
    monkeypatch.setattr(int4_one_row, "runs_on", lambda device: False)
    assert not any([kernels(cpu, "precision=bf16"), kernels(cuda, "precision=int4"),
                    kernels(cuda, "precision=fp32"),
                    kernels(cuda, "precision=bf16", "backend.one_row_kernels=false"),
                    kernels(cuda, "precision=bf16", "backend.compile=false"),
                    kernels(cuda, "precision=bf16", "backend.cuda_graph=false")])

