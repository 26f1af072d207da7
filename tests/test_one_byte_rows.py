"""Products of several rows with one-byte weights as one Triton kernel (backends/pytorch/one_byte_rows.py) compute
what torchao's weight-only int8 linear and its fp8 linear (quantize.one_row_fp8's arithmetic) do. On a CPU the
kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET), in float16: the products' order of
summation differs, so an output may land one rounding step from the reference. The engine on a GPU:
tests/test_gpu.py."""

import pytest
import torch

from higgs_bench.backends.pytorch import one_byte_rows, quantize
from higgs_bench.backends.pytorch.one_byte_rows import (Blocks, Float8RowsLinear, Int8RowsLinear, blocks_for,
                                                        rows_matmul, runs)
from higgs_bench.backends.pytorch.quantised_linears import Float8Linear, Int8Linear, one_row_fp8
from tests.test_quantised_variants import fp8_weight

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's; on CUDA see tests/test_gpu.py"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:triton")]


def int8_linears(outputs: int, inputs: int) -> tuple[torch.nn.Linear, Int8RowsLinear]:
    """A linear quantised by the engine's torchao configuration (per-row int8), and the engine's linear over its
    tensors."""
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    torchaos = torch.nn.Linear(inputs, outputs, bias=False).to(torch.float16)
    quantize_(torchaos, quantize.torchao_config("int8"))
    return torchaos, Int8RowsLinear.of(torchaos.weight)


def fp8s(weight, x: torch.Tensor) -> torch.Tensor:
    return one_row_fp8(x.reshape(-1, x.shape[-1]), weight.qdata, weight.scale).view(*x.shape[:-1], -1)


def within_a_rounding_step(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    step = theirs.float().abs().max() * 2 ** -10  # float16's relative step at the largest output
    return bool(((mine.float() - theirs.float()).abs() <= step).all())


@pytest.mark.parametrize("rows", [2, 3, 16, 17])
@pytest.mark.parametrize("weights_first", [False, True])
def test_the_kernel_computes_torchaos_int8_product_at_any_row_count(rows, weights_first):
    """Row counts under, at and over one block of 16 rows (the last block masked), in both operand orders."""
    torchaos, linear = int8_linears(64, 128)
    x = torch.randn(rows, 1, 128, dtype=torch.float16)
    mine = rows_matmul(x, linear.qdata, linear.scale, Blocks(16, 32, 64, 2, 4, weights_first))
    assert mine.shape == (rows, 1, 64) and within_a_rounding_step(mine, torchaos(x))


@pytest.mark.parametrize("rows", [3, 17])
@pytest.mark.parametrize("weights_first", [False, True])
def test_the_kernel_computes_the_fp8_product_at_any_row_count(rows, weights_first):
    """fp8: each row quantised as torchao quantises activations, products in float32, both scales, one rounding."""
    torch.manual_seed(0)
    weight = fp8_weight(64, 96)
    x = torch.randn(rows, 96, dtype=torch.float16)
    mine = rows_matmul(x, weight.qdata, weight.scale, Blocks(16, 32, 32, 2, 4, weights_first))
    assert mine.dtype == torch.float16 and within_a_rounding_step(mine, fp8s(weight, x))


def test_a_product_whose_scales_are_off_fails_the_comparison():
    """Guard on the tests above: the comparison sees a wrong scale (here twice the right one)."""
    (torchaos, linear), weight = int8_linears(64, 128), fp8_weight(64, 96)
    x, x8 = torch.randn(4, 128, dtype=torch.float16), torch.randn(4, 96, dtype=torch.float16)
    assert not within_a_rounding_step(rows_matmul(x, linear.qdata, linear.scale * 2), torchaos(x))
    assert not within_a_rounding_step(rows_matmul(x8, weight.qdata, weight.scale * 2), fp8s(weight, x8))


def test_linears_take_the_kernel_for_several_rows_and_their_own_product_for_one(monkeypatch):
    launched = []
    monkeypatch.setattr(one_byte_rows, "rows_matmul",
                        lambda x, *args: launched.append(x.shape) or rows_matmul(x, *args))
    torchaos, linear = int8_linears(64, 128)
    for rows in (1, 5):
        x = torch.randn(rows, 1, 128, dtype=torch.float16)
        assert within_a_rounding_step(linear(x), torchaos(x))
    fp8_linear = Float8RowsLinear.of(fp8_weight(64, 96))
    assert within_a_rounding_step(fp8_linear(torch.ones(3, 96, dtype=torch.float16)),
                                  fp8s(fp8_linear, torch.ones(3, 96, dtype=torch.float16)))
    assert launched == [(5, 1, 128), (3, 96)]
    assert runs(torch.randn(5, 128, dtype=torch.float16), linear.qdata)
    assert not runs(torch.randn(5, 128), linear.qdata)  # float32 activations stay torchao's


def test_blocks_fit_every_product_up_to_64_rows():
    """At the 3B shape on an H200 (132 SMs: 66 programs wanted) each product gets the blocks measured fastest; a
    tiny model's products get blocks that divide them; more than 64 rows, or sizes no blocks divide, go to
    torchao's product instead."""
    shapes = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}
    widths = {kind: blocks_for(64, *shape, programs_wanted=66).outputs for kind, shape in shapes.items()}
    assert widths == {"qkv": 64, "o": 32, "gate_up": 128, "down": 32}
    assert {blocks_for(4, *shape, programs_wanted=66) for shape in shapes.values()} == \
        {one_byte_rows.FEW_ROWS_BLOCKS[0]}
    for rows in (2, 3, 16, 17, 64):
        for outputs, inputs in list(shapes.values()) + [(128, 64), (64, 128), (48, 96)]:
            blocks = blocks_for(rows, outputs, inputs, programs_wanted=66)
            assert outputs % blocks.outputs == 0 and inputs % blocks.inputs == 0, (rows, outputs, inputs)
    assert blocks_for(65, 5120, 3072, 1) is None
    assert blocks_for(4, 40, 64, 1) is None and blocks_for(4, 64, 48, 1) is None


def test_quantised_linears_take_the_kernel_on_cuda_from_ampere_on_where_it_is_on(tiny_hf, monkeypatch):
    cuda = torch.device("cuda")
    for capability, taken in (((9, 0), True), ((8, 0), True), ((7, 5), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert quantize.linear_class("int8", cuda) is (Int8RowsLinear if taken else Int8Linear)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert quantize.linear_class("fp8", cuda) is Float8RowsLinear
    monkeypatch.setattr(quantize, "FP8_ROWS_KERNEL", False)
    assert quantize.linear_class("fp8", cuda) is Float8Linear
    assert quantize.linear_class("int8", torch.device("cpu")) is Int8Linear
    from higgs_bench.backends.pytorch.backend import TorchBackend

    backend = TorchBackend.from_checkpoint(tiny_hf, dtype=torch.bfloat16, quantised="int8")
    assert not any(isinstance(module, Int8RowsLinear) for module in backend.network.modules())
    assert any(isinstance(module, Int8Linear) for module in backend.network.modules())
