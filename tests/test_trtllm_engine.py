"""`pytest -m trtllm`: tiny engines built with TensorRT-LLM 1.2.x on a GPU, checked against the torch reference.

Skipped where tensorrt_llm or CUDA is missing (this project's CI has neither). docs/trtllm.md says how to run it.
"""

import json

import pytest
import torch
from omegaconf import OmegaConf

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.bench.config import EngineConfig, PrecisionConfig
from higgs_bench.errors import GenerationError
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.model.config import read_config
from higgs_bench.codec.random_codec import embedded_codec
from tests.test_main_job import SMALL, bench

pytestmark = pytest.mark.trtllm
pytest.importorskip("tensorrt_llm")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from higgs_bench.backends.trtllm.build_config import engine_settings  # noqa: E402
from higgs_bench.backends.trtllm.engine import build_engine  # noqa: E402
from higgs_bench.backends.trtllm.runtime import TrtllmBackend  # noqa: E402

FRAMES = 24
# Relative L2 error of the audio logits against the float32 reference, per precision: tight where only the
# activation dtype differs, wider (and stated) where weights or activations are quantised.
TOLERANCE = {"fp16": 0.01, "bf16": 0.03, "int8": 0.05, "int4": 0.3, "fp8": 0.15}
PRECISIONS = {"fp16": {"dtype": "fp16"}, "bf16": {"dtype": "bf16"}, "int8": {"dtype": "bf16", "weights": "int8"},
              "int4": {"dtype": "bf16", "weights": "int4"},
              "fp8": {"dtype": "bf16", "weights": "fp8", "kv_cache": "fp8"}}


def build(tiny_trtllm, out, precision: str, **engine):
    engine = OmegaConf.merge(OmegaConf.structured(EngineConfig(max_batch_size=4, max_input_len=256, max_seq_len=512,
                                                               max_num_tokens=1024)), engine)
    prec = OmegaConf.merge(OmegaConf.structured(PrecisionConfig(name=precision)), PRECISIONS[precision])
    build_engine(tiny_trtllm, out, engine_settings(engine, prec, read_config(tiny_trtllm)))
    return TrtllmBackend(out, "cuda")


@pytest.fixture(scope="module")
def reference(tiny_trtllm, prompt_inputs):
    """The float32 torch reference: its greedy frames, and its logits at every step of them."""
    torch_backend = TorchBackend.from_checkpoint(tiny_trtllm, device="cuda")
    frames = generate(torch_backend, prompt_inputs, SamplingConfig(greedy=True), FRAMES, stop_at_eos=False).streams
    return frames, teacher_forced(torch_backend, prompt_inputs, frames)


def teacher_forced(backend, prompts, frames) -> torch.Tensor:
    logits = [backend.prefill(prompts, frames.shape[1])]
    for step in range(frames.shape[1] - 1):
        logits.append(backend.step(frames[:, step].cuda()))
    return torch.stack([x.float() for x in logits], dim=1)  # [B, steps, N, C]


def relative_error(got, want) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_teacher_forced_logits_match_the_reference(tiny_trtllm, prompt_inputs, reference, tmp_path, precision):
    if precision == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    frames, want = reference
    engine = build(tiny_trtllm, tmp_path / precision, precision)
    got = teacher_forced(engine, prompt_inputs, frames)
    assert relative_error(got, want) < TOLERANCE[precision]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_greedy_codes_equal_the_reference_with_voice_cloning_in_the_batch(tiny_trtllm, prompt_inputs, reference,
                                                                          tmp_path, precision):
    engine = build(tiny_trtllm, tmp_path / precision, precision)
    got = generate(engine, prompt_inputs, SamplingConfig(greedy=True), FRAMES, stop_at_eos=False).streams
    assert torch.equal(got, reference[0])


def test_both_routings_compute_the_same_logits(tiny_trtllm, prompt_inputs, reference, tmp_path):
    frames = reference[0]
    gather = teacher_forced(build(tiny_trtllm, tmp_path / "gather", "fp16"), prompt_inputs, frames)
    select = teacher_forced(build(tiny_trtllm, tmp_path / "select", "fp16", audio_routing="select"), prompt_inputs, frames)
    assert relative_error(gather, select) < 1e-3


@pytest.mark.parametrize("routing", ["gather", "select"])
def test_steps_with_no_rows_of_one_kind_match_the_reference(tiny_trtllm, prompt_inputs, tmp_path, routing):
    """A prefill with no audio positions (plain TTS) and decode steps with no text positions: the routed
    MLPs get zero rows (trtllm-review.md, finding 3). If a build rejects the empty index, this fails first."""
    text_only = prompt_inputs[:1]
    assert not text_only[0].audio_mask.any()  # guard: the prefill really has no audio rows
    torch_backend = TorchBackend.from_checkpoint(tiny_trtllm, device="cuda")
    frames = generate(torch_backend, text_only, SamplingConfig(greedy=True), 8, stop_at_eos=False).streams
    want = teacher_forced(torch_backend, text_only, frames)
    engine = build(tiny_trtllm, tmp_path / routing, "fp16", audio_routing=routing)
    assert relative_error(teacher_forced(engine, text_only, frames), want) < TOLERANCE["fp16"]


def test_in_flight_batching_gives_each_request_its_codes_alone(tiny_trtllm, prompt_inputs, tmp_path):
    """Requests joining two slots at different times (per-row lengths in the plugin) get their codes alone."""
    from higgs_bench.generate.slots import Request, serve

    engine = build(tiny_trtllm, tmp_path / "slots", "fp16")
    requests = [Request(f"r{i}", prompt, FRAMES) for i, prompt in enumerate(prompt_inputs)]
    served = serve(engine, requests, SamplingConfig(greedy=True), slots=2)
    for request, result in zip(requests, served):
        alone = generate(engine, [request.prompt], SamplingConfig(greedy=True), FRAMES)
        assert torch.equal(result.streams, alone.streams[0]), request.id


def test_the_step_replayed_as_a_cuda_graph_gives_the_same_codes_and_logits(tiny_trtllm, prompt_inputs, tmp_path):
    """Generation steps replayed from graphs captured one step ahead (step_graph.py) against plain enqueues, for
    a static batch and for requests joining slots (a join drops the captured step)."""
    from higgs_bench.generate.slots import Request, serve

    out = tmp_path / "graph"
    plain = build(tiny_trtllm, out, "fp16")
    graphed = TrtllmBackend(out, "cuda", cuda_graph=True)
    plain.graphs = None
    greedy = SamplingConfig(greedy=True)
    want = generate(plain, prompt_inputs, greedy, FRAMES)
    assert torch.equal(generate(graphed, prompt_inputs, greedy, FRAMES).streams, want.streams)
    assert graphed.graphs.disabled is None and graphed.graphs.instances[0] is not None  # guard: graphs replayed
    requests = [Request(f"r{i}", prompt, FRAMES, arrival_s=0.002 * i) for i, prompt in enumerate(prompt_inputs)]
    for a, b in zip(serve(plain, requests, greedy, slots=2), serve(graphed, requests, greedy, slots=2)):
        assert torch.equal(a.streams, b.streams), a.id


def test_requests_beyond_the_engine_fail_before_running(tiny_trtllm, prompt_inputs, tmp_path):
    engine = build(tiny_trtllm, tmp_path / "small", "fp16", max_batch_size=2)
    with pytest.raises(GenerationError, match="max_batch_size=2"):
        engine.prefill(prompt_inputs, FRAMES)


def test_the_benchmark_measures_speed_and_memory_of_each_precision(tiny_trtllm, tmp_path):
    model = ["model.embedded=false", f"model.path={tiny_trtllm}", f"model.codec_path={embedded_codec()}"]
    done = bench(tmp_path, "-m", "backend=trtllm", "precision=bf16,int8,fp8", "asr=none", *model, *SMALL,
                 "hydra.sweep.dir=sweep")
    assert done.returncode == 0, done.stderr
    rows = {r["variant"]: r for r in json.loads((tmp_path / "sweep" / "summary.json").read_text())["rows"]}
    for variant in ("trtllm-bf16", "trtllm-int8"):
        assert rows[variant]["status"] == "ok", rows[variant].get("error")
        assert rows[variant]["rtf"] > 0
    records = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/benchmark_report.json")]
    assert all(r["memory"]["peak_gpu_gb"] > 0 for r in records if r["status"] == "ok")


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_the_network_declares_every_tensor_the_converter_writes(tiny_trtllm, tmp_path, precision):
    from tensorrt_llm.models.modeling_utils import PretrainedConfig

    from higgs_bench.backends.trtllm.convert import convert
    from higgs_bench.backends.trtllm.names import Quant, tensor_table
    from higgs_bench.backends.trtllm.network import HiggsAudioForCausalLM

    quant = Quant(**{"weights": None, "kv_cache": None} | PRECISIONS[precision])
    amax = {}
    if precision == "fp8":
        from higgs_bench.backends.trtllm.calibrate import calibrate_checkpoint
        amax = calibrate_checkpoint(tiny_trtllm, frames=12)
    checkpoint = convert(tiny_trtllm, tmp_path / "ckpt", quant, amax=amax)
    model = HiggsAudioForCausalLM(PretrainedConfig.from_json_file(str(checkpoint / "config.json")))
    declared = {name: tuple(p.shape) for name, p in model.named_parameters()}
    table = tensor_table(read_config(tiny_trtllm), quant)
    assert {name: declared.get(name) for name in table} == {name: spec.shape for name, spec in table.items()}
