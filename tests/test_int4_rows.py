"""Products of several rows with int4 weights as one Triton kernel (backends/pytorch/int4_rows.py) compute what
torchao's int4 linear (tinygemm over its packed weights) does: (q - 8) * scale + zero per group of 128 inputs. On a
CPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET), in float16 (the interpreter does not
compute bf16); the weights are packed by int4_rows.tinygemm_pack, which a GPU test holds to torch's packing
(tests/test_gpu.py, with the engine there)."""

import pytest
import torch

from higgs_bench.backends.pytorch import int4_rows, quantize
from higgs_bench.backends.pytorch.int4_rows import (GROUP, Int4RowsLinear, blocks_for, int4_rows_matmul, runs,
                                                   tinygemm_pack)
from higgs_bench.backends.pytorch.quantised_linears import Int4Linear
from higgs_bench.backends.pytorch.one_byte_rows import Blocks

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's; on CUDA see tests/test_gpu.py"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:triton")]


def int4_weight(outputs: int, inputs: int, packed_inputs: int | None = None):
    """(packed words, scale_and_zero, the weights as float32) of random int4 values, packed over `packed_inputs`
    (torchao pads the inputs to a multiple of 1024), with scales and zeros as torchao lays them out."""
    packed_inputs = packed_inputs or inputs
    values = torch.randint(0, 16, (outputs, packed_inputs))
    scale = (torch.rand(outputs, packed_inputs // GROUP) / 8).to(torch.bfloat16)
    zero = (torch.randn(outputs, packed_inputs // GROUP) / 8).to(torch.bfloat16)
    weights = ((values.float() - 8).view(outputs, -1, GROUP) * scale.float()[..., None] + zero.float()[..., None])
    scale_and_zero = torch.stack([scale, zero], -1).transpose(0, 1).contiguous()
    return tinygemm_pack(values), scale_and_zero, weights.view(outputs, packed_inputs)[:, :inputs]


def within_a_rounding_step(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    """Within the relative step of mine's dtype (float16: 2^-10, bf16: 2^-7) at the largest output."""
    step = theirs.float().abs().max() * torch.finfo(mine.dtype).eps
    return bool(((mine.float() - theirs.float()).abs() <= step).all())


def test_packing_puts_each_value_where_the_layout_says():
    """Word i = 4c + j, nibble p = 4h + 2t + e of row n and group g hold input 32j + 16t + 8e + 2c + h, the 16
    words of (n, g) at ((n // 8) * groups + g) * 128 + (n % 8) * 16: one value set at a time, found there alone."""
    for n, k in ((0, 0), (3, 1), (9, 37), (15, 130), (12, 255)):
        values = torch.zeros(16, 256, dtype=torch.long)
        values[n, k] = 5
        words = tinygemm_pack(values).flatten()
        group, at = divmod(k, GROUP)
        j, t, e, c, h = at // 32, at // 16 % 2, at // 8 % 2, at // 2 % 4, at % 2
        word = ((n // 8) * 2 + group) * 128 + (n % 8) * 16 + 4 * c + j
        assert words.nonzero().flatten().tolist() == [word]
        assert words[word].item() == 5 << 4 * (4 * h + 2 * t + e)


@pytest.mark.parametrize("rows", [2, 3, 16, 17])
@pytest.mark.parametrize("weights_first", [False, True])
def test_the_kernel_computes_the_dequantised_product_at_any_row_count(rows, weights_first):
    """Row counts under, at and over one block of 16 rows (the last block masked), in both operand orders, over
    inputs packed with torchao's padding (256 inputs in 1024)."""
    torch.manual_seed(0)
    packed, scale_and_zero, weights = int4_weight(64, 256, packed_inputs=1024)
    x = torch.randn(rows, 1, 256, dtype=torch.float16)
    mine = int4_rows_matmul(x, packed, scale_and_zero, 64, Blocks(16, 32, GROUP, 2, 4, weights_first))
    theirs = (x.float() @ weights.t()).half()
    assert mine.shape == (rows, 1, 64) and within_a_rounding_step(mine, theirs)


def test_a_product_whose_zeros_or_scales_are_off_fails_the_comparison():
    """Guard on the test above: the comparison sees a wrong scale or zero (here twice the right one)."""
    torch.manual_seed(0)
    packed, scale_and_zero, weights = int4_weight(64, 256)
    x = torch.randn(17, 256, dtype=torch.float16)
    theirs = (x.float() @ weights.t()).half()
    for which in (0, 1):
        wrong = scale_and_zero.clone()
        wrong[..., which] *= 2
        assert not within_a_rounding_step(int4_rows_matmul(x, packed, wrong, 64), theirs)


def test_the_linear_takes_the_kernel_for_17_to_64_bf16_rows_and_torchaos_product_otherwise(monkeypatch):
    torch.manual_seed(0)
    packed, scale_and_zero, weights = int4_weight(64, 256)
    linear = Int4RowsLinear(256, 64, qdata=packed, scale_and_zero=scale_and_zero)
    launched, torchaos = [], []
    monkeypatch.setattr(int4_rows, "int4_rows_matmul", lambda x, *args: launched.append(x.shape) or
                        int4_rows_matmul(x.half(), *args).to(x.dtype))  # the interpreter computes float16
    monkeypatch.setattr(Int4Linear, "forward", lambda self, x: torchaos.append(x.shape))  # tinygemm: CUDA only
    x = torch.randn(17, 256, dtype=torch.bfloat16)
    assert within_a_rounding_step(linear(x), x.float() @ weights.t())
    for rows in (1, 16, 65):  # under MIN_ROWS (tinygemm measured faster there), past MAX_ROWS
        linear(torch.randn(rows, 256, dtype=torch.bfloat16))
    linear(torch.randn(17, 256, dtype=torch.float16))  # tinygemm's activations are bf16
    assert launched == [(17, 256)] and torchaos == [(1, 256), (16, 256), (65, 256), (17, 256)]
    assert runs(x, linear) and not runs(torch.randn(5, 256), linear)


def test_blocks_fit_every_product_of_17_to_64_rows():
    """Outputs in multiples of tinygemm's 8-row tiles; each product at the 3B shape gets the blocks measured at
    64 rows on an H200 (32 weight rows per program); fewer than 17 rows and more than 64 go to tinygemm."""
    shapes = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}
    assert {blocks_for(64, outputs, programs_wanted=66).outputs for outputs, _ in shapes.values()} == {32}
    for rows in (17, 64):
        for outputs, _ in list(shapes.values()) + [(256, 128), (128, 256), (40, 128)]:
            blocks = blocks_for(rows, outputs, programs_wanted=66)
            assert outputs % blocks.outputs == 0 and blocks.inputs == GROUP, (rows, outputs)
            if outputs >= 3072:
                assert outputs // blocks.outputs * -(-rows // blocks.rows) >= 66
    assert blocks_for(65, 5120, 1) is None and blocks_for(16, 5120, 1) is None and blocks_for(20, 36, 1) is None


def test_int4_linears_take_the_kernel_on_cuda_from_ampere_on_where_it_is_on(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(quantize, "INT4_ROWS_KERNEL", True)
    for capability, taken in (((9, 0), True), ((8, 0), True), ((7, 5), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert quantize.linear_class("int4", cuda) is (Int4RowsLinear if taken else Int4Linear)
    monkeypatch.setattr(quantize, "INT4_ROWS_KERNEL", False)
    assert quantize.linear_class("int4", cuda) is Int4Linear
