"""The TensorRT-LLM converter, its quantisation maths and the engine-config translation, on the CPU."""

import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from higgs_bench.backends.trtllm import quantize
from higgs_bench.backends.trtllm.build_config import build_config_dict, engine_settings
from higgs_bench.backends.trtllm.calibrate import calibrate_checkpoint, pair_norm_max
from higgs_bench.backends.trtllm.convert import ConversionError, convert
from higgs_bench.backends.trtllm.names import Quant, tensor_table
from higgs_bench.bench.config import ConfigError, EngineConfig, PrecisionConfig
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.config import read_config

PRECISIONS = [Quant("bf16"), Quant("fp16", "int8"), Quant("bf16", "int4"), Quant("bf16", "fp8", "fp8")]


@pytest.fixture(scope="module")
def amax(tiny_boson):
    return calibrate_checkpoint(tiny_boson, frames=20)


@pytest.mark.parametrize("quant", PRECISIONS, ids=lambda q: f"{q.dtype}-{q.weights}")
@pytest.mark.parametrize("tp", [1, 2])
def test_every_rank_holds_exactly_the_networks_tensors(tiny_boson, amax, tmp_path, quant, tp):
    out = convert(tiny_boson, tmp_path / "ckpt", quant, tp, amax)
    cfg = read_config(tiny_boson)
    table = tensor_table(cfg, quant, tp)
    for rank in range(tp):
        tensors = load_file(out / f"rank{rank}.safetensors")
        assert {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()} == {
            k: (s.shape, s.dtype) for k, s in table.items()}
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "HiggsAudioForCausalLM" and config["mapping"]["tp_size"] == tp
    assert config["quantization"]["quant_algo"] == quant.quant_algo
    assert config["audio_layer_kinds"] == list(cfg.layer_kinds) and config["audio_routing"] == "gather"


def test_fast_forward_checkpoints_are_refused_before_anything_is_written(tiny_fast_forward, tmp_path):
    with pytest.raises(ConversionError, match="fast-forward layers"):
        convert(tiny_fast_forward, tmp_path / "ckpt", Quant("bf16"))
    assert list(tmp_path.iterdir()) == []


def test_tensor_parallel_shards_put_the_full_weights_back_together(tiny_boson, tmp_path):
    out = convert(tiny_boson, tmp_path / "ckpt", Quant("bf16"), tp=2)
    weights, cfg = load_checkpoint(tiny_boson).weights, read_config(tiny_boson)
    ranks = [load_file(out / f"rank{r}.safetensors") for r in range(2)]
    q, kv = cfg.num_heads * cfg.head_dim // 2, cfg.num_kv_heads * cfg.head_dim // 2
    qkv = [r["transformer.layers.0.attention.qkv.weight"].float() for r in ranks]
    for part, (start, size) in zip("qkv", [(0, q), (q, kv), (q + kv, kv)]):
        joined = torch.cat([w[start:start + size] for w in qkv])
        assert torch.equal(joined, weights[f"layers.0.self_attn.{part}_proj.weight"].bfloat16().float())
    dense = torch.cat([r["transformer.layers.0.attention.dense.weight"] for r in ranks], dim=1)
    assert torch.equal(dense, weights["layers.0.self_attn.o_proj.weight"].bfloat16())
    for leaf, source in (("fc", "gate_proj"), ("gate", "up_proj")):  # GatedMLP activates fc
        joined = torch.cat([r[f"transformer.layers.0.audio_mlp.{leaf}.weight"] for r in ranks])
        assert torch.equal(joined, weights[f"layers.0.audio_mlp.{source}.weight"].bfloat16())
    head = torch.cat([r["lm_head.weight"] for r in ranks])
    assert torch.equal(head, weights["audio_lm_head.weight"].bfloat16())


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_quantisation_error_is_half_a_step(bits):
    w = torch.randn(96, 64) * torch.linspace(0.01, 3, 96)[:, None]  # very different channel ranges
    q, scale = quantize.weight_only(w, bits)
    assert q.shape == (64, 96) and scale.shape == (96,) and q.dtype == torch.int8
    assert q.abs().max() <= 2 ** (bits - 1) - 1
    error = (quantize.dequantize_weight_only(q, scale) - w).abs()
    assert (error <= scale[:, None] / 2 + 1e-6).all()
    assert torch.allclose(scale, w.abs().amax(dim=1) / (2 ** (bits - 1) - 1))


def test_int4_packing_round_trips():
    q = torch.randint(-7, 8, (6, 10), dtype=torch.int8)
    packed = quantize.pack_int4(q)
    assert packed.shape == (6, 5) and torch.equal(quantize.unpack_int4(packed), q)


def test_fp8_weights_keep_three_mantissa_bits():
    w = torch.randn(64, 64)
    q, scale = quantize.fp8_weight(w)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (1,)
    assert torch.isclose(scale, w.abs().max() / 448)
    back = q.float() * scale
    normal = w.abs() > scale * 2**-6  # e4m3's normal range; below it the error is absolute
    assert ((back - w).abs()[normal] <= w.abs()[normal] / 16 + 1e-7).all()


def test_calibration_covers_every_linear_and_kv_cache(tiny_boson, amax):
    cfg = read_config(tiny_boson)
    table = tensor_table(cfg, Quant("bf16", "fp8", "fp8"))
    wanted = {k.rsplit(".", 1)[0] for k in table if k.endswith("activation_scaling_factor")}
    wanted |= {k.replace("kv_cache_scaling_factor", "kv_cache") for k in table if k.endswith("kv_cache_scaling_factor")}
    assert wanted <= set(amax) and all(amax[k] > 0 for k in wanted)


def test_the_kv_bound_holds_after_any_rotary_angle():
    keys, head_dim = torch.randn(50, 2, 16), 16
    bound = pair_norm_max(keys, head_dim)
    half = head_dim // 2
    for angle in torch.linspace(0, 6.28, 30):
        c, s = torch.cos(angle), torch.sin(angle)
        rotated = torch.cat([keys[..., :half] * c - keys[..., half:] * s, keys[..., half:] * c + keys[..., :half] * s], -1)
        assert rotated.abs().max() <= bound + 1e-5


@pytest.mark.parametrize(
    "quant, tp, with_amax, message",
    [
        (Quant("bf16", "int4_awq"), 1, False, "AWQ"),
        (Quant("bf16"), 3, False, "tp_size=3"),
        (Quant("bf16", "fp8"), 1, False, "calibration"),
        (Quant("fp32"), 1, False, "fp16 or bf16"),
    ],
)
def test_conversions_that_cannot_be_done_write_nothing(tiny_boson, tmp_path, quant, tp, with_amax, message):
    with pytest.raises(ConversionError, match=message):
        convert(tiny_boson, tmp_path / "ckpt", quant, tp)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_not_overwritten(tiny_boson, tmp_path):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ConversionError, match="already exists"):
        convert(tiny_boson, tmp_path / "ckpt", Quant("bf16"))


def settings(engine=None, precision=None, tiny=None):
    engine = OmegaConf.merge(OmegaConf.structured(EngineConfig), engine or {})
    precision = OmegaConf.merge(OmegaConf.structured(PrecisionConfig(name="p", dtype="bf16")), precision or {})
    return engine_settings(engine, precision, tiny)


def test_engine_config_translation(tiny_hf):
    cfg = read_config(tiny_hf)
    s = settings(tiny=cfg)
    assert s.build_config == {"max_batch_size": 16, "max_input_len": 1024, "max_seq_len": 2048, "max_num_tokens": 8192,
                              "max_beam_width": 1, "kv_cache_type": "CONTINUOUS", "gather_context_logits": False,
                              "gather_generation_logits": False, "strongly_typed": True}
    assert s.plugin_config["gpt_attention_plugin"] == s.plugin_config["gemm_plugin"] == "bfloat16"
    assert s.plugin_config["remove_input_padding"] and not s.plugin_config["use_paged_context_fmha"]
    assert s.runtime == {"kv_cache_free_gpu_memory_fraction": 0.9, "kv_cache_max_tokens": None}
    assert s.audio_routing == "gather" and settings({"audio_routing": "select"}, tiny=cfg).audio_routing == "select"
    fp8 = settings(precision={"weights": "fp8", "kv_cache": "fp8"}, tiny=cfg)
    assert fp8.plugin_config["gemm_plugin"] is None and fp8.quant == Quant("bf16", "fp8", "fp8")


def test_the_timing_cache_is_written_into_the_engine_folder(tiny_hf, tmp_path):
    """BuildConfig's default output_timing_cache is model.cache in the current directory."""
    built = build_config_dict(settings(tiny=read_config(tiny_hf)), tmp_path / "engines" / "trtllm-bf16")
    assert built["output_timing_cache"] == str(tmp_path / "engines" / "trtllm-bf16" / "timing.cache")
    assert built["plugin_config"]["gpt_attention_plugin"] == "bfloat16" and built["max_seq_len"] == 2048


# decoderMaskedMultiheadAttention.cu (TensorRT-LLM 1.2): the head sizes the decode kernels are built for
MMHA_HEAD_SIZES = {32, 48, 64, 80, 96, 104, 112, 128, 144, 160, 192, 224, 256}


def test_the_trtllm_test_model_has_a_decode_kernel_head_size_and_every_rope_band(tiny_trtllm):
    cfg = read_config(tiny_trtllm)
    assert cfg.head_dim in MMHA_HEAD_SIZES
    scaling = cfg.rope_scaling
    original = scaling["original_max_position_embeddings"]
    wavelengths = [2 * math.pi * cfg.rope_theta ** (i / cfg.head_dim) for i in range(0, cfg.head_dim, 2)]
    high = [w < original / scaling["high_freq_factor"] for w in wavelengths]  # kept as they are
    low = [w > original / scaling["low_freq_factor"] for w in wavelengths]  # divided by the factor
    assert any(high) and any(low) and not all(h or l for h, l in zip(high, low))  # and some blended between


@pytest.mark.parametrize(
    "engine, precision, message",
    [
        ({"max_seq_len": 512}, {}, "engine.max_seq_len=512 must exceed engine.max_input_len=1024"),
        ({"paged_kv_cache": True}, {}, "engine.paged_kv_cache=true"),
        ({"audio_routing": "mask"}, {}, "engine.audio_routing='mask'"),
        ({"max_seq_len": 10000}, {}, "exceeds the model's 4096 positions"),
        ({"max_num_tokens": 100}, {}, "engine.max_num_tokens=100"),
        ({"tokens_per_block": 48}, {}, "engine.tokens_per_block=48 must be a power of two"),
        ({"gpt_attention_plugin": None}, {}, "engine.gpt_attention_plugin=null"),
        ({"kv_cache_free_gpu_memory_fraction": 1.5}, {}, "kv_cache_free_gpu_memory_fraction=1.5"),
        ({"kv_cache_max_tokens": 100}, {}, "engine.kv_cache_max_tokens=100"),
        ({}, {"dtype": "fp32"}, "precision.dtype=fp32"),
        ({}, {"weights": "int4_awq"}, "precision=int4_awq"),
        ({}, {"kv_cache": "int8"}, "precision.kv_cache='int8'"),
    ],
)
def test_engine_settings_that_cannot_build_name_the_setting(tiny_hf, engine, precision, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings(engine, precision, read_config(tiny_hf))
