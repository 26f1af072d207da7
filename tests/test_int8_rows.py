"""int8 weight-only products of several rows as one Triton kernel (backends/pytorch/int8_rows.py) compute what
torchao's weight-only int8 linear does. On a CPU the kernel runs in Triton's interpreter (conftest sets
TRITON_INTERPRET), in float16: the products' order of summation differs, so an output may land one rounding
step from torchao's. The engine on a GPU: tests/test_gpu.py."""

import pytest
import torch

from higgs_bench.backends.pytorch import int8_rows, quantize
from higgs_bench.backends.pytorch.int8_rows import Blocks, Int8Linear, blocks_for, int8_matmul, runs

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's; on CUDA see tests/test_gpu.py"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:triton")]


def int8_linear(outputs: int, inputs: int) -> torch.nn.Linear:
    """A linear quantised by the engine's torchao configuration (per-row int8), as an Int8Linear."""
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    linear = torch.nn.Linear(inputs, outputs, bias=False).to(torch.float16)
    quantize_(linear, quantize.torchao_config("int8"))
    linear.__class__ = Int8Linear
    return linear


def torchaos(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.Linear.forward(linear, x)


def within_a_rounding_step(mine: torch.Tensor, theirs: torch.Tensor) -> bool:
    step = theirs.float().abs().max() * 2 ** -10  # float16's relative step at the largest output
    return bool(((mine.float() - theirs.float()).abs() <= step).all())


@pytest.mark.parametrize("rows", [2, 3, 16, 17])
@pytest.mark.parametrize("weights_first", [False, True])
def test_the_kernel_computes_torchaos_int8_product_at_any_row_count(rows, weights_first):
    """Row counts under, at and over one block of 16 rows (the last block masked), in both operand orders."""
    linear = int8_linear(64, 128)
    x = torch.randn(rows, 1, 128, dtype=torch.float16)
    mine = int8_matmul(x, linear.weight.qdata, linear.weight.scale, Blocks(16, 32, 64, 2, 4, weights_first))
    assert mine.shape == (rows, 1, 64) and within_a_rounding_step(mine, torchaos(linear, x))


def test_a_product_whose_scales_are_off_fails_the_comparison():
    """Guard on the test above: the comparison sees a wrong scale (here twice the right one)."""
    linear = int8_linear(64, 128)
    x = torch.randn(4, 128, dtype=torch.float16)
    mine = int8_matmul(x, linear.weight.qdata, linear.weight.scale * 2)
    assert not within_a_rounding_step(mine, torchaos(linear, x))


def test_an_int8_linear_takes_the_kernel_for_several_rows_and_torchaos_product_for_one(monkeypatch):
    linear = int8_linear(64, 128)
    launched = []
    monkeypatch.setattr(int8_rows, "int8_matmul", lambda x, *args: launched.append(x.shape) or int8_matmul(x, *args))
    for rows in (1, 5):
        x = torch.randn(rows, 1, 128, dtype=torch.float16)
        assert within_a_rounding_step(linear(x), torchaos(linear, x))
    assert launched == [(5, 1, 128)]
    assert runs(torch.randn(5, 128, dtype=torch.float16), linear.weight.qdata)
    assert not runs(torch.randn(5, 128), linear.weight.qdata)  # float32 activations stay torchao's


def test_blocks_fit_every_product_whose_sizes_16_divides_up_to_64_rows():
    """At the 3B shape on an H200 (132 SMs: 66 programs wanted) each product gets the blocks measured fastest; a
    tiny model's products get blocks that divide them; more than 64 rows, or sizes 16 does not divide, go to
    torchao's product instead."""
    shapes = {"qkv": (5120, 3072), "o": (3072, 3072), "gate_up": (16384, 3072), "down": (3072, 8192)}
    widths = {kind: blocks_for(64, *shape, programs_wanted=66).outputs for kind, shape in shapes.items()}
    assert widths == {"qkv": 64, "o": 32, "gate_up": 128, "down": 32}
    assert {blocks_for(4, *shape, programs_wanted=66) for shape in shapes.values()} == {int8_rows.FEW_ROWS_BLOCKS[0]}
    for rows in (2, 3, 16, 17, 64):
        for outputs, inputs in list(shapes.values()) + [(128, 64), (64, 128), (48, 32)]:
            blocks = blocks_for(rows, outputs, inputs, programs_wanted=66)
            assert outputs % blocks.outputs == 0 and inputs % blocks.inputs == 0, (rows, outputs, inputs)
    assert blocks_for(65, 5120, 3072, 1) is None
    assert blocks_for(4, 40, 64, 1) is None and blocks_for(4, 64, 40, 1) is None


def test_int8_engines_take_the_kernel_on_cuda_from_ampere_on(tiny_hf, monkeypatch):
    for capability, taken in (((9, 0), True), ((8, 0), True), ((7, 5), False)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert (quantize.int8_linear_class(torch.device("cuda")) is Int8Linear) == taken
    assert quantize.int8_linear_class(torch.device("cpu")) is None
    from higgs_bench.backends.pytorch.backend import TorchBackend

    backend = TorchBackend.from_checkpoint(tiny_hf, dtype=torch.bfloat16, quantised="int8")
    assert not any(isinstance(module, Int8Linear) for module in backend.network.modules())
