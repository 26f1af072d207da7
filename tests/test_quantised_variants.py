"""Quantised torch variants (torchao) and the fidelity figures every record carries."""

import pytest
import torch

from higgs_bench.backends.pytorch import quantize
from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.backends.pytorch.network import network_linear
from higgs_bench.backends.pytorch.quantised_linears import Float8Linear, Int8Linear, one_row_fp8
from higgs_bench.bench.fidelity import fidelity
from higgs_bench.errors import ConfigError
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.weights import quantised_linears

# int8 per-channel rounding moves each weight by at most half a step (max|w| / 254): about 0.4 % rms per
# linear, which three layers turn into about 1 % of the logits (bf16 alone: 0.7 %). The bounds leave 3x room.
INT8_BOUNDS = {"logits_rel_l2": 0.03, "kl": 1e-3, "top1_agreement": 0.95}


@pytest.fixture(scope="module")
def reference(tiny_hf):
    return TorchBackend.from_checkpoint(tiny_hf, dtype=torch.float32)


def int8_backend(tiny_hf):
    return TorchBackend.from_checkpoint(tiny_hf, dtype=torch.bfloat16, quantised="int8")


def within(report: dict, bounds: dict) -> bool:
    return (report["logits_rel_l2"] <= bounds["logits_rel_l2"] and report["kl"] <= bounds["kl"]
            and report["top1_agreement"] >= bounds["top1_agreement"])


def test_int8_quantises_exactly_the_shared_table_of_linears(tiny_hf):
    backend = int8_backend(tiny_hf)
    quantised = {name for name, module in backend.network.named_modules() if isinstance(module, Int8Linear)}
    assert quantised == {network_linear(name) for name in quantised_linears(backend.config)}
    assert "audio_lm_head" not in quantised and quantised  # the audio head stays in 16 bits


def test_int8_fidelity_is_within_its_bounds(tiny_hf, reference, prompt_inputs):
    report = fidelity(reference, int8_backend(tiny_hf), prompt_inputs, 24)
    assert within(report, INT8_BOUNDS), report
    assert len(report["top1_agreement_per_codebook"]) == 8 and report["greedy_frames_identical"] >= 1


def test_a_broken_quantisation_fails_the_bound(tiny_hf, reference, prompt_inputs):
    broken = int8_backend(tiny_hf)
    for name in {network_linear(name) for name in quantised_linears(broken.config)}:
        broken.network.get_submodule(name).scale.mul_(2)  # scales off by 2x
    assert not within(fidelity(reference, broken, prompt_inputs, 24), INT8_BOUNDS)


def test_the_reference_against_itself_is_exact(reference, prompt_inputs):
    report = fidelity(reference, reference, prompt_inputs, 16)
    assert report["logits_rel_l2"] == 0 and report["top1_agreement"] == 1 and report["greedy_frames_identical"] == 16


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("kind, needs", [("int4", "needs an NVIDIA GPU"), ("fp8", "compute capability >= 8.9")])
def test_gpu_only_kinds_are_refused_on_the_cpu_naming_the_gpu_they_need(tiny_hf, kind, needs):
    checkpoint = load_checkpoint(tiny_hf)
    with pytest.raises(ConfigError, match=needs):
        TorchBackend(checkpoint.config, checkpoint.weights, dtype=torch.bfloat16, quantised=kind)


def fp8_weight(rows: int, columns: int):
    """torchao's fp8 weight of a random bf16 matrix, as quantise's config makes it (quantize_ itself refuses to
    run on a CPU): per-row scales, activations quantised per row."""
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import (Float8Tensor,
                                                                             QuantizeTensorToFloat8Kwargs)

    config = quantize.torchao_config("fp8")
    activations, weights = config.granularity
    return Float8Tensor.from_hp(torch.randn(rows, columns, dtype=torch.bfloat16), config.weight_dtype, weights,
                                mm_config=config.mm_config,
                                act_quant_kwargs=QuantizeTensorToFloat8Kwargs(config.activation_dtype, activations))


@pytest.mark.parametrize("magnitude", [1e-3, 1.0, 300.0])
def test_the_one_row_fp8_product_computes_what_torchao_fp8_computes(magnitude):
    """torchao's own definition of its fp8 product (its KernelPreference.EMULATED): activation and weight
    quantised per row, dequantised, multiplied in float32; activations in float32, as compiled engines see
    them (Inductor keeps the scale's arithmetic in float32)."""
    from torchao.quantization.quantize_.workflows.float8.float8_tensor import Float8Tensor

    torch.manual_seed(0)
    weight, x = fp8_weight(64, 96), torch.randn(1, 96, dtype=torch.bfloat16) * magnitude
    x_fp8 = Float8Tensor.from_hp(x.float(), granularity=weight.act_quant_kwargs.granularity)
    want = (x_fp8.dequantize(torch.float32) @ weight.dequantize(torch.float32).t()).to(torch.bfloat16)
    assert torch.equal(one_row_fp8(x, weight.qdata, weight.scale), want)


@torch.inference_mode()
def test_a_compiled_fp8_linear_takes_the_one_row_product_for_one_row_only(monkeypatch):
    """Compiled, one row takes one_row_fp8 and several take `_scaled_mm`: the same arithmetic."""
    torch.manual_seed(0)
    linear = Float8Linear.of(fp8_weight(64, 96))
    traced = []
    monkeypatch.setattr("higgs_bench.backends.pytorch.quantised_linears.one_row_fp8",
                        lambda *args: traced.append(args[0].shape) or one_row_fp8(*args))
    for rows in (1, 4):
        x = torch.randn(rows, 1, 96, dtype=torch.bfloat16)
        want = one_row_fp8(x.reshape(rows, 96), linear.qdata, linear.scale).view(rows, 1, 64)
        torch.testing.assert_close(torch.compile(linear)(x), want, rtol=1e-2, atol=1e-2)
    assert traced == [(1, 96)]  # traced once, for the product of one row


def torchao_linear(weight) -> torch.nn.Linear:
    linear = torch.nn.Linear(*reversed(weight.shape), bias=False, device="meta")
    linear.weight = torch.nn.Parameter(weight, requires_grad=False)
    return linear


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_engines_linears_compute_what_torchaos_linears_compute(dtype):
    """The engine holds torchao's quantised tensors as plain ones (quantised_linears.py) and computes torchao's
    products over them, exactly: fp8 as compiled (quantised_linears.fp8_activations). int4's tinygemm runs on CUDA
    only (tests/test_gpu.py). A scale off by 2x fails the comparison."""
    from torchao.quantization import quantize_

    torch.manual_seed(0)
    theirs_int8 = torch.nn.Linear(96, 64, bias=False).to(dtype)
    quantize_(theirs_int8, quantize.torchao_config("int8"))
    theirs_fp8 = torchao_linear(fp8_weight(64, 96))
    x = torch.randn(3, 5, 96, dtype=dtype)
    for theirs, mine in ((theirs_int8, Int8Linear.of(theirs_int8.weight)), (theirs_fp8, Float8Linear.of(
            theirs_fp8.weight))):
        want = torch.compile(theirs)(x) if theirs is theirs_fp8 else theirs(x)
        assert mine(x).shape == want.shape == (3, 5, 64) and mine(x).dtype == dtype and torch.equal(mine(x), want)
        mine.scale.mul_(2)
        assert not torch.allclose(mine(x), want, rtol=0.1, atol=0.1)
