"""`pytest -m gpu` (skipped without CUDA): the fast engines agree with the reference on a real GPU."""

import os
from pathlib import Path

import pytest
import torch

from higgs_bench.backends.pytorch.backend import Speed, TorchBackend, one_row_inputs, one_row_logits
from higgs_bench.backends.pytorch.engine import load_engine, save_artefacts
from higgs_bench.backends.pytorch.precompiled import AOT_COMPILE
from higgs_bench.bench.fidelity import fidelity
from higgs_bench.codec.random_codec import embedded_codec
from higgs_bench.generate.chooser import FrameChooser
from higgs_bench.generate.loop import generate
from higgs_bench.generate.sampling import SamplingConfig
from higgs_bench.generate.slots import Admission, Request, serve
from higgs_bench.model.random_checkpoint import make_config
from tests.parity import GREEDY
from tests.test_compiled_engine import bench

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
# Bounds for the 3B shape against the bf16 reference (random weights), about 1.5x the H200 measurement of
# 2026-12-01 (docs/performance.md: rel. L2 / top-1 = int8 0.033 / 94 %, fp8 0.111 / 84 %, int4 0.308 / 59 %).
# Random weights have no outliers, so int4's 16 levels per group of 128 move the logits most.
BOUNDS = {"int8": (0.05, 0.9), "fp8": (0.17, 0.75), "int4": (0.45, 0.45)}  # (logits_rel_l2 <=, top1 >=)


def test_cpu_cuda_eager_graph_and_compiled_give_the_same_greedy_codes(tiny_hf, prompt_inputs):
    cpu = generate(TorchBackend.from_checkpoint(tiny_hf), prompt_inputs, GREEDY, 40).streams
    for speed in (Speed(), Speed(cuda_graph=True), Speed(cuda_graph=True, compile_mode="default", max_seq_len=512)):
        backend = TorchBackend.from_checkpoint(tiny_hf, device="cuda", speed=speed)
        assert torch.equal(generate(backend, prompt_inputs, GREEDY, 40).streams, cpu), speed


@pytest.mark.parametrize("staging_bytes", [1000, 64 << 20])
def test_weights_reach_the_gpu_exactly_and_a_damaged_one_is_refused_there(tiny_hf, tmp_path, monkeypatch,
                                                                           staging_bytes):
    """The loader's pinned, asynchronous copies through two buffers (each tensor in many chunks, the last one
    short, or each in one) and its one wait for every tensor's check."""
    import shutil

    from safetensors.torch import load_file, save_file

    from higgs_bench.errors import CheckpointError
    from higgs_bench.model import checkpoint
    from higgs_bench.model.checkpoint import load_checkpoint

    monkeypatch.setattr(checkpoint, "STAGING_BYTES", staging_bytes)
    on_cpu = load_checkpoint(tiny_hf).weights
    on_gpu = load_checkpoint(tiny_hf, device="cuda").weights
    assert all(torch.equal(on_gpu[name].cpu(), tensor) for name, tensor in on_cpu.items())
    damaged = tmp_path / "model"
    shutil.copytree(tiny_hf, damaged)
    weights = load_file(damaged / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"][3, 4] = float("nan")
    save_file(weights, damaged / "model.safetensors")
    with pytest.raises(CheckpointError, match="down_proj.weight holds 1 NaN"):
        load_checkpoint(damaged, device="cuda")


@pytest.mark.parametrize("compile_mode", [None, "default"])
def test_captured_prefill_and_slots_on_cuda_give_each_request_its_cpu_codes(tiny_hf, prompt_inputs, compile_mode):
    """A lone prompt takes the captured prefill (padded to its bucket; with audio both MLPs selected per position,
    text-only the text MLP alone; compiled when the engine is); the slots admit one request at a time (in-flight)
    and several at once (static)."""
    cpu = TorchBackend.from_checkpoint(tiny_hf)
    alone = [generate(cpu, [p], GREEDY, 30).streams[0] for p in prompt_inputs]
    speed = Speed(cuda_graph=True, compile_mode=compile_mode, max_seq_len=512)
    graph = TorchBackend.from_checkpoint(tiny_hf, device="cuda", speed=speed)
    for prompt, want in zip(prompt_inputs, alone):
        assert torch.equal(generate(graph, [prompt], GREEDY, 30).streams[0], want)
    assert {audio for _, audio in graph.prefill_graphs} == {False, True}  # guard: both captured paths ran
    requests = [Request(f"r{i}", p, 30, arrival_s=0.01 * i) for i, p in enumerate(prompt_inputs)]
    for batching in ("inflight", "static"):
        served = serve(graph, requests, GREEDY, slots=2, admission=Admission(batching))
        assert all(torch.equal(s.streams, want) for s, want in zip(served, alone)), batching


@pytest.mark.parametrize("sampling", [GREEDY, SamplingConfig(temperature=0.8, top_p=0.9, ras_win_len=4, seed=11),
                                      SamplingConfig(temperature=1.0, top_k=50, top_p=None, seed=3, ignore_eos=True)])
@pytest.mark.parametrize("compile", [False, True])
def test_the_captured_frame_chooser_chooses_what_the_eager_one_does(sampling, compile):
    """Seeded draws in the CUDA graph are the eager draws (the generator is registered with the graph), fresh at
    every replay, and the state (steps, EOS steps, RAS window, frame limits) moves on alike."""
    config = make_config()
    torch.manual_seed(0)
    logits = torch.randn(3, config.num_codebooks, config.audio_vocab_size, device="cuda")
    logits[2, 0, config.stream_eos_id] = 30.0  # row 2 asks for EOS: its codebooks close one per step
    choosers = [FrameChooser(sampling, config, torch.device("cuda"), 3, capture=c, compile=compile)
                for c in (True, False)]
    for chooser in choosers:
        chooser.seed(sampling.seed)
        chooser.start_rows(slice(None), torch.tensor([40, 25, 40], device="cuda"), None)
    frames = []
    for _ in range(40):
        (captured, done), (eager, eager_done) = (chooser(logits) for chooser in choosers)
        assert torch.equal(captured, eager) and torch.equal(done, eager_done)
        frames.append(captured)
    assert choosers[0].graph is not None and torch.equal(choosers[0].eos_step, choosers[1].eos_step)
    assert choosers[0].mode == ("compiled CUDA graph" if compile else "CUDA graph")
    if not sampling.greedy:  # guard: the same logits at every step, yet not the same draws
        assert len({tuple(f[0].tolist()) for f in frames[config.num_codebooks:]}) > 1


def test_top_p_on_the_gpu_keeps_what_the_sorted_warper_keeps_on_the_cpu():
    """top_p_kernel.py's nucleus (eager, and inside a compiled frame choice) against sampling.sorted_top_p on the
    CPU, for a one-row frame's 8 codebooks and 64 rows' 512; scores rounded to few values (ties) keep as many."""
    from higgs_bench.generate.sampling import sorted_top_p, warp

    compiled_warp = torch.compile(warp, fullgraph=True)
    for rows in (1, 64):
        scores = torch.randn(rows, 8, 1026, generator=torch.Generator().manual_seed(rows)) * 3
        tied = (scores * 2).round() / 2
        for top_p in (0.5, 0.95, 0.999):
            cfg = SamplingConfig(temperature=1.0, top_p=top_p)
            want = sorted_top_p(scores, top_p).isfinite()
            assert torch.equal(warp(scores.cuda(), cfg).isfinite().cpu(), want), (rows, top_p)
            assert torch.equal(compiled_warp(scores.cuda(), cfg).isfinite().cpu(), want), (rows, top_p)
            counts = warp(tied.cuda(), cfg).isfinite().sum(-1).cpu()
            assert torch.equal(counts, sorted_top_p(tied, top_p).isfinite().sum(-1)), (rows, top_p)


@pytest.mark.parametrize("quantised", [None, "int8", "fp8", "int4"])
def test_a_compiled_engine_reloaded_from_its_artefacts_gives_the_same_logits(tiny_hf, tiny_trtllm, prompt_inputs,
                                                                              tmp_path, quantised):
    """fp32, and bf16 with each quantisation (its products of several rows in its own Triton kernels inside the
    functions kept whole; the model whose sizes are multiples of int4's groups of 128)."""
    if quantised == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    speed = Speed(cuda_graph=True, compile_mode="default", max_seq_len=512)
    shapes = [(len(prompt_inputs), 200)]
    model, dtype = (tiny_trtllm, torch.bfloat16) if quantised else (tiny_hf, torch.float32)
    built, _ = load_engine(model, torch.device("cuda"), dtype, quantised, speed, shapes)
    artefacts = save_artefacts(tmp_path, built)
    frame = torch.randint(0, 1024, (len(prompt_inputs), 8), device="cuda")
    built.prefill(prompt_inputs, 40)
    expected = built.step(frame)
    reloaded, times = load_engine(model, torch.device("cuda"), dtype, quantised, speed, shapes, artefacts)
    reloaded.prefill(prompt_inputs, 40)
    assert times["artefacts_loaded"] and torch.equal(reloaded.step(frame), expected)
    # a quantised engine's weights as its build quantised them (engine_weights.py), the others' the checkpoint's
    assert times["weights_from"] == ("engine" if quantised else "checkpoint")
    # its layers were loaded whole where this torch compiles ahead of time (precompiled.py), not compiled again
    assert times["precompiled"] == ({"loaded": len(artefacts.precompiled), "compiled": 0} if AOT_COMPILE else
                                    {"loaded": 0, "compiled": 0})
    assert len(artefacts.precompiled) >= 1 or not AOT_COMPILE


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "fp8", "int4"])
def test_a_second_run_on_the_gpu_compiles_nothing_its_captured_prefill_included(tmp_path, tiny_trtllm, precision):
    """The build compiles the decode step's shapes, the lone prompt's captured prefill and the frame chooser, and
    keeps them all, quantised engines' too: a fresh process with an empty Inductor cache of its own compiles
    nothing, and neither run compiles anything after its start. bf16's, int8's, fp8's and (from Hopper on) int4's
    one-row steps are one_row.py's kernels (int4's products int4_one_row.py's Gluon kernel), which Triton compiles
    into the engine folder at the build and loads from there at the start (kernel_cache.py), and so are the kernels
    inside the compiled functions: the frame choice's top-p kernel and the quantised engines' rows kernels. int4 on
    the model whose sizes are multiples of its groups of 128."""
    if precision == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    model = ("model.embedded=false", f"model.path={tiny_trtllm}", f"model.codec_path={embedded_codec()}")
    settings = ("backend.device=cuda", f"precision={precision}") + (model if precision == "int4" else ())
    _, cold = bench(tmp_path, "cold", *settings)
    assert cold["settings"]["prefills"] == [[64, False]]
    assert {"prefill-64", "choose-1-sampled"} <= set(cold["compile"]["warm_s_per_shape"])
    _, warm = bench(tmp_path, "warm", *settings)
    own, own_warm = cold["compile"]["own_kernels"], warm["start"]["own_kernels"]
    assert own_warm["compiled"] == warm["start"]["other_triton_kernels"]["compiled"] == 0
    assert (own["compiled"] > 0 and any(k["file"].endswith(".cubin") for k in cold["triton_kernels"])) == (
        precision != "fp32")
    # kernels inside the compiled functions: the frame choice's top-p kernel (top_p_kernel.py), and quantised
    # engines' rows kernels for products of several rows (the captured prefill's 64): the build kept them in the
    # engine folder too (engine.kernels_kept_in), the start loaded them
    kept_inside = own_warm["loaded"] - own["compiled"]
    assert any(k["file"].endswith("top_p_kernel.cubin") for k in cold["triton_kernels"])
    assert kept_inside >= 1 and (kept_inside > 1) == (precision in ("int8", "fp8", "int4"))
    assert warm["reused"] and {"prefill-64", "choose-1-sampled"} <= set(warm["start"]["warm_s_per_shape"])
    assert warm["start"]["kernels"] == {"fxgraph_cache_hit": cold["compile"]["kernels"]["fxgraph_cache_miss"],
                                        "fxgraph_cache_miss": 0, "kernels_tuned": 0}
    assert warm["start"]["precompiled"] == {"loaded": len(cold["precompiled"]), "compiled": 0}
    # the frame choosers' compilations among them, whatever the weights (chooser.precompiled_choices)
    assert any(saved["function"].startswith("choose-") for saved in cold["precompiled"]) == AOT_COMPILE
    assert cold["compiled_during_run"] == warm["compiled_during_run"] == {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 0,
                                                                         "ahead_of_time": 0, "triton_kernels": 0}


def test_a_second_int8_start_on_the_same_gpu_tunes_no_kernel_again(tmp_path):
    """Coordinate descent tunes the int8 engine's kernels at its build where its one-row step is compiled rather
    than one_row.py's kernels; a second start on the same machine takes every tuned config from Inductor's cache.
    With the static launcher torch <= 2.11 tuned them again, and so did Inductor's compile workers for every
    shape compiled once they were up (engine.WARM_START_INDUCTOR; docs/performance.md, "Warm starts compiled in the
    process"). Nor does Triton compile a kernel: the rows kernels of its products of two rows, and the kernels that
    coordinate descent tuned, come from the engine folder, where the build's loading of its functions as a fresh
    process loads them put them (precompiled.as_a_fresh_process_loads; before, the first start compiled ten)."""
    settings = ("backend.device=cuda", "precision=int8", "backend.one_row_kernels=false")  # its compiled one-row step
    _, cold = bench(tmp_path, "cold", *settings, inductor="shared", batch_sizes="[1,2]")
    _, warm = bench(tmp_path, "warm", *settings, inductor="shared", batch_sizes="[1,2]")
    assert cold["settings"]["shapes"][:2] == [[1, 256], [2, 256]] and cold["compile"]["kernels"]["kernels_tuned"] > 0
    assert warm["reused"] and warm["start"]["kernels"]["kernels_tuned"] == 0
    assert warm["start"]["own_kernels"]["compiled"] == warm["start"]["other_triton_kernels"]["compiled"] == 0
    # the rows kernels of the eager prefill of two prompts are kept in the engine folder (TorchBackend.keep_kernels_in)
    assert warm["compiled_during_run"]["triton_kernels"] == 0


# Compiled against eager prefill of the same quantised engine (tiny_trtllm, bf16), measured on an H200: int8
# 0.009, fp8 0.052 (relative L2 of the logits). fp8 rounds every activation to 3 mantissa bits: where Inductor
# fuses a norm and rounds its bf16 output differently, some activations land one fp8 step apart. The decode
# steps (one row: fp8's quantize.one_row_fp8) are held to the same bounds.
COMPILED_BOUNDS = {"int8": 2e-2, "int4": 2e-2, "fp8": 0.1}
# Captured against eager: a captured prefill pads the prompt to its bucket (64 rows), an eager one does not, so
# their products may take other kernels. int8: the rows kernel's other blocks sum in another order, in bf16. int4:
# fewer than 17 rows are tinygemm's, which rounds each dequantised weight to bf16, 17-64 rows int4_rows.py's kernel,
# which does not. fp8: other blocks round a product's bf16 output otherwise, and the next product's activations can
# land one fp8 step apart. An H200 run with fp8's and int4's kernels on failed fp8 and int4 at the 1e-3 they had
# while both were torchao's; the engine with and without the kernels meets COMPILED_BOUNDS there
# (test_quantised_products_of_several_rows_compute_what_torchaos_do).
CAPTURED_BOUNDS = {"int8": 1e-3, "int4": COMPILED_BOUNDS["int4"], "fp8": COMPILED_BOUNDS["fp8"]}


@pytest.mark.parametrize("quantised", sorted(COMPILED_BOUNDS))
def test_each_quantised_engine_captures_its_prefill_and_computes_what_eager_does(tiny_trtllm, prompt_inputs,
                                                                                 quantised):
    """The captured prefill (padded to its bucket) and decode steps, with eager and with compiled layers,
    against the same engine's eager ones on the same GPU, for a text-only prompt and a voice-cloning one (both
    MLPs on every position). The model whose sizes are multiples of int4's groups of 128."""
    if quantised == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    speeds = (Speed(max_seq_len=512), Speed(cuda_graph=True, max_seq_len=512),
              Speed(cuda_graph=True, compile_mode="default", max_seq_len=512))
    eager, captured, compiled = (TorchBackend.from_checkpoint(tiny_trtllm, device="cuda", dtype=torch.bfloat16,
                                                              quantised=quantised, speed=speed) for speed in speeds)
    frames = torch.randint(0, 1024, (3, 1, 8), device="cuda")
    for prompt in (prompt_inputs[0], prompt_inputs[2]):
        want = [eager.prefill([prompt], 20)] + [eager.step(frame) for frame in frames]
        for engine, bound in ((captured, CAPTURED_BOUNDS[quantised]), (compiled, COMPILED_BOUNDS[quantised])):
            # the prefill, then decode steps of one row (fp8 compiles them as quantize.one_row_fp8)
            got = [engine.prefill([prompt], 20)] + [engine.step(frame) for frame in frames]
            for mine, theirs in zip(got, want):
                assert ((mine - theirs).norm() / theirs.norm()).item() < bound, engine.speed
    assert len(compiled.prefill_graphs) == 2  # guard: the captured path ran, with and without audio


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("dtype, quantised", [(torch.bfloat16, None), (torch.float16, None), (torch.bfloat16, "int8"),
                                             (torch.bfloat16, "fp8")])
def test_one_row_kernels_in_the_cuda_graph_compute_what_compiled_layers_do(tiny_hf, tiny_fast_forward, prompt_inputs,
                                                                       dtype, quantised, prefetch, monkeypatch):
    """one_row.py's kernels, launched with PDL and captured, against the same engine's layers (captured, not
    compiled): a text-only and a voice-cloning prompt, and a model with a fast-forward layer. Each operation
    rounds as the network's does; the products' order of summation differs. 16-bit engines are compiled as
    torch_speed builds them (the step's work around the kernels, and the prefill: Inductor fuses its norms
    without rounding between, 0.011 from eager in bf16 on an H200, so COMPILED_BOUNDS' 2e-2); int8's compiled
    layers would tune for minutes. fp8 quantises each product's input row as torchao does, but divides by its
    scale approximately (Triton's division), so a value may land one fp8 step apart: COMPILED_BOUNDS' 0.1. With
    and without attention's prefetch of its cache columns (one_row.PREFETCH_CACHE)."""
    if quantised == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    settings = "higgs_bench.backends.pytorch.one_row."  # imports Triton, which CUDA torch brings
    monkeypatch.setattr(settings + "PREFETCH_CACHE", prefetch)
    compiled = quantised is None
    for checkpoint in (tiny_hf, tiny_fast_forward):
        layers, kernels = (TorchBackend.from_checkpoint(checkpoint, device="cuda", dtype=dtype, quantised=quantised,
                                                        speed=Speed(cuda_graph=True, max_seq_len=512,
                                                                    compile_mode="default" if on and compiled else None,
                                                                    one_row_kernels=on))
                           for on in (False, True))
        assert kernels.one_row.pdl == (torch.cuda.get_device_capability() >= (9, 0)) and layers.one_row is None
        assert (kernels.one_row_ends != (one_row_inputs, one_row_logits)) == compiled  # guard: compiled ends ran
        frames = torch.randint(0, 1024, (4, 1, 8), device="cuda")
        for prompt in (prompt_inputs[0], prompt_inputs[2]):
            want = [layers.prefill([prompt], 20)] + [layers.step(frame) for frame in frames]
            got = [kernels.prefill([prompt], 20)] + [kernels.step(frame) for frame in frames]
            assert compiled or torch.equal(got[0], want[0])  # the prefill is the network's, the same in both
            for mine, theirs in zip(got, want):
                bound = COMPILED_BOUNDS["fp8"] if quantised == "fp8" else 2e-2 if compiled else 1e-2
                assert ((mine - theirs).norm() / theirs.norm()).item() < bound
        assert kernels.states[1, 256].graph is not None  # guard: the steps replayed a captured graph


def test_int8_weights_decode_to_the_floats_torch_converts_them_to():
    """Every byte through one_row's bit decoding (INT8_FLOATS: PTX) against torch's conversion, in each of the
    four places of the register Triton packs them in."""
    from tests.one_byte_floats import floats_kernel

    for shift in range(4):
        data = torch.arange(-128, 128, device="cuda", dtype=torch.int8).roll(shift)
        decoded, converted = (torch.empty(256, device="cuda") for _ in range(2))
        floats_kernel[(1,)](data, decoded, WEIGHTS="int8", DECODE=True)
        floats_kernel[(1,)](data, converted, WEIGHTS="int8", DECODE=False)
        assert torch.equal(decoded, data.float()) and torch.equal(converted, data.float())


def test_int8_one_row_steps_are_identical_with_weights_decoded_or_converted(tiny_hf, prompt_inputs, monkeypatch):
    """one_row.DECODE_INT8 changes how a weight becomes a float, not the float: the same logits, bit for bit."""
    logits = []
    for decode in (True, False):
        monkeypatch.setattr("higgs_bench.backends.pytorch.one_row.DECODE_INT8", decode)
        backend = TorchBackend.from_checkpoint(tiny_hf, device="cuda", dtype=torch.bfloat16, quantised="int8",
                                               speed=Speed(cuda_graph=True, max_seq_len=512, one_row_kernels=True))
        assert backend.one_row.decode == decode
        logits.append([backend.prefill([prompt_inputs[2]], 20)] +
                      [backend.step(torch.full((1, 8), code, device="cuda")) for code in (3, 700, 1023)])
    assert all(torch.equal(a, b) for a, b in zip(*logits))


def test_compiled_int8_at_several_rows_runs_the_rows_kernel_and_no_slow_int8pack_kernel(tiny_hf, prompt_inputs):
    """Inductor's weight-only int8 pattern would call torch's _weight_int8pack_mm, 100x slower than cuBLAS at 64
    rows on an H200 (docs/performance.md); the int8 engine turns that pattern off, and its products of several
    rows are one_byte_rows.py's kernel."""
    speed = Speed(cuda_graph=False, compile_mode="default", max_seq_len=512)
    backend = TorchBackend.from_checkpoint(tiny_hf, device="cuda", dtype=torch.bfloat16, quantised="int8", speed=speed)
    backend.prefill(prompt_inputs, 10)
    frame = torch.randint(0, 1024, (len(prompt_inputs), 8), device="cuda")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        backend.step(frame)
        torch.cuda.synchronize()
    kernels = [event.key for event in prof.key_averages()]
    assert len(prompt_inputs) > 1 and not any("int8pack" in name for name in kernels), kernels
    assert any("rows_kernel" in name for name in kernels), kernels


@pytest.mark.parametrize("compile_mode", [None, "default"])
@pytest.mark.parametrize("quantised", ["int8", "fp8", "int4"])
def test_quantised_products_of_several_rows_compute_what_torchaos_do(tiny_trtllm, prompt_inputs, monkeypatch,
                                                                     compile_mode, quantised):
    """An int8, fp8 or int4 engine with its kernel for products of several rows (one_byte_rows.py, int4_rows.py;
    quantize.INT8_ROWS_KERNEL, FP8_ROWS_KERNEL, INT4_ROWS_KERNEL) against the same engine with torchao's products:
    a lone prompt's captured prefill (64 rows), a prefill of three prompts and captured steps of three rows, eager
    and compiled layers; the kernel must have run (int4's takes 17-64 rows only). int8: only the products'
    order of summation differs, in bf16. fp8: so it does, but a row's activations quantised by Inductor's fused
    division can land one fp8 step from torchao's (COMPILED_BOUNDS). int4: tinygemm rounds each dequantised weight
    to bf16, the kernel sums scale * sum((q - 8) x) + zero * sum(x) in float32. The model whose sizes are multiples
    of int4's groups of 128."""
    from higgs_bench.backends.pytorch import int4_rows, one_byte_rows  # import Triton
    from higgs_bench.backends.pytorch.int4_rows import Int4RowsLinear
    from higgs_bench.backends.pytorch.one_byte_rows import Float8RowsLinear, Int8RowsLinear

    if quantised == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    logits, launches = [], torch.zeros((), dtype=torch.int64, device="cuda")

    def counted(kernel):  # on the device: dynamo would guard on a Python counter and compile again at each launch
        def launch(*args, **kwargs):
            launches.add_(1)
            return kernel(*args, **kwargs)
        return launch

    for module, name in ((int4_rows, "int4_rows_matmul"), (one_byte_rows, "rows_matmul")):
        monkeypatch.setattr(module, name, counted(getattr(module, name)))
    for kernel in (False, True):
        monkeypatch.setattr(f"higgs_bench.backends.pytorch.quantize.{quantised.upper()}_ROWS_KERNEL", kernel)
        backend = TorchBackend.from_checkpoint(tiny_trtllm, device="cuda", dtype=torch.bfloat16, quantised=quantised,
                                               speed=Speed(cuda_graph=True, compile_mode=compile_mode, max_seq_len=512))
        frames = torch.randint(0, 1024, (3, len(prompt_inputs), 8), device="cuda", generator=torch.Generator(
            "cuda").manual_seed(0))
        logits.append([backend.prefill(prompt_inputs[:1], 20), backend.prefill(prompt_inputs, 20)] +
                      [backend.step(frame) for frame in frames])
        assert backend.state.graph is not None and len(prompt_inputs) == 3 and backend.prefill_graphs
        assert (launches.item() > 0) == kernel
        rows_class = {"int8": Int8RowsLinear, "fp8": Float8RowsLinear, "int4": Int4RowsLinear}[quantised]
        assert any(isinstance(module, rows_class) for module in backend.network.modules()) == kernel
    bound = COMPILED_BOUNDS["fp8"] if quantised == "fp8" else 2e-2
    for mine, theirs in zip(*logits):
        assert ((mine - theirs).norm() / theirs.norm()).item() < bound


@torch.inference_mode()
@pytest.mark.parametrize("quantised", ["int8", "fp8", "int4"])
def test_the_engines_linears_compute_what_torchaos_do_on_the_gpu(quantised):
    """quantised_linears.py's products (torchao's tensors held as plain ones; the classes without the rows kernels)
    against torchao's own linears on CUDA, exactly, at one row and several (fp8 against torchao's compiled product:
    quantised_linears.fp8_activations). 384 inputs: int4's packing pads them to 1024."""
    from torchao.quantization import quantize_

    from higgs_bench.backends.pytorch.quantize import torchao_config
    from higgs_bench.backends.pytorch.quantised_linears import Float8Linear, Int4Linear, Int8Linear

    if quantised == "fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability >= 8.9")
    torch.manual_seed(0)
    theirs = torch.nn.Linear(384, 256, bias=False, device="cuda", dtype=torch.bfloat16)
    quantize_(theirs, torchao_config(quantised))
    mine = {"int8": Int8Linear, "fp8": Float8Linear, "int4": Int4Linear}[quantised].of(theirs.weight)
    reference = torch.compile(theirs) if quantised == "fp8" else theirs
    for rows in (1, 5, 100, 0):  # no rows: an eager prefill's audio MLP on a text-only prompt
        x = torch.randn(rows, 384, device="cuda", dtype=torch.bfloat16)
        assert torch.equal(mine(x), reference(x)), rows


def test_int4_weights_are_packed_as_torch_packs_them_and_the_kernel_computes_tinygemms_product():
    """int4_rows.tinygemm_pack (the layout the kernel reads, and the CPU tests pack with) is torch's
    _convert_weight_to_int4pack, word for word; the kernel's products of 2-64 rows are tinygemm's, but for its
    rounding of each dequantised weight to bf16, for 256 inputs packed as torchao pads them (to 1024). (Engines
    take the kernel from MIN_ROWS on; below, the narrowest blocks are given.)"""
    from higgs_bench.backends.pytorch.int4_rows import BLOCKS, GROUP, MIN_ROWS, int4_rows_matmul, tinygemm_pack

    values = torch.randint(0, 16, (64, 1024), device="cuda")
    packed = torch.ops.aten._convert_weight_to_int4pack((values[:, ::2] << 4 | values[:, 1::2]).to(torch.uint8), 8)
    assert torch.equal(tinygemm_pack(values), packed)
    scale_and_zero = torch.stack([torch.rand(8, 64, device="cuda") / 64, torch.randn(8, 64, device="cuda") / 64],
                                 -1).to(torch.bfloat16)
    for rows in (2, 17, 64):
        x = torch.randn(rows, 256, device="cuda", dtype=torch.bfloat16)
        theirs = torch.ops.aten._weight_int4pack_mm(torch.nn.functional.pad(x, (0, 768)), packed, GROUP,
                                                    scale_and_zero).float()
        blocks = BLOCKS[-1] if rows < MIN_ROWS else None
        mine = int4_rows_matmul(x, packed, scale_and_zero, 64, blocks).float()
        assert ((mine - theirs).norm() / theirs.norm()).item() < 1e-2
        wrong = int4_rows_matmul(x, packed, scale_and_zero * 2, 64, blocks).float()
        assert ((wrong - theirs).norm() / theirs.norm()).item() > 0.5


HOPPER = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
                            reason="int4_one_row.py's kernel needs Hopper (TMA)")


@HOPPER
@pytest.mark.parametrize("outputs, inputs", [(5120, 3072), (3072, 3072), (16384, 3072), (3072, 8192), (48, 256)])
def test_int4_one_row_kernel_computes_tinygemms_product(outputs, inputs):
    """int4_one_row.py's product of one row, reading torch's packing of the weights where it lies, against
    tinygemm's at the 3B products and at 256 inputs packed as torchao pads them (to 1024), but for tinygemm's
    rounding of each dequantised weight to bf16; scales twice too large fail."""
    from higgs_bench.backends.pytorch.int4_one_row import pack_scales
    from higgs_bench.backends.pytorch.int4_rows import GROUP

    torch.manual_seed(0)
    packed_inputs = -(-inputs // 1024) * 1024
    values = torch.randint(0, 16, (outputs, packed_inputs), device="cuda")
    packed = torch.ops.aten._convert_weight_to_int4pack((values[:, ::2] << 4 | values[:, 1::2]).to(torch.uint8), 8)
    groups = packed_inputs // GROUP
    scale_and_zero = torch.stack([torch.rand(groups, outputs, device="cuda") / 64,
                                  torch.randn(groups, outputs, device="cuda") / 64], -1).to(torch.bfloat16)
    x = torch.randn(1, inputs, device="cuda", dtype=torch.bfloat16)
    theirs = torch.ops.aten._weight_int4pack_mm(torch.nn.functional.pad(x, (0, packed_inputs - inputs)), packed,
                                                GROUP, scale_and_zero).float()
    mine = torch.ops.higgs_bench.int4_one_row(x, packed, pack_scales(scale_and_zero), outputs, 1).float()
    assert ((mine - theirs).norm() / theirs.norm()).item() < 1e-2
    wrong = torch.ops.higgs_bench.int4_one_row(x, packed, pack_scales(scale_and_zero * 2), outputs, 1).float()
    assert ((wrong - theirs).norm() / theirs.norm()).item() > 0.5


@HOPPER
def test_int4_one_row_steps_run_the_gluon_kernel_and_compute_what_tinygemm_does(tiny_trtllm, prompt_inputs,
                                                                                monkeypatch):
    """An int4 engine with int4_one_row.py's kernel for products of one row (quantize.INT4_ONE_ROW_KERNEL) against
    the same engine with tinygemm's: a lone prompt's captured prefill and captured compiled steps of one row; the
    kernel must have run in the steps' graphs. Their difference is tinygemm's rounding of each dequantised weight
    to bf16 (COMPILED_BOUNDS). The model whose sizes are multiples of int4's groups of 128."""
    from higgs_bench.backends.pytorch import int4_one_row
    from higgs_bench.backends.pytorch.int4_rows import Int4RowsLinear

    launches = torch.zeros((), dtype=torch.int64, device="cuda")

    class Counted:  # the kernel's launches, counted on the device (dynamo would guard on a Python counter)
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            launches.add_(1)
            return self.kernel[grid]

    monkeypatch.setattr(int4_one_row, "int4_one_row_kernel", Counted(int4_one_row.int4_one_row_kernel))
    logits = []
    for kernel in (False, True):
        monkeypatch.setattr("higgs_bench.backends.pytorch.quantize.INT4_ONE_ROW_KERNEL", kernel)
        backend = TorchBackend.from_checkpoint(tiny_trtllm, device="cuda", dtype=torch.bfloat16, quantised="int4",
                                               speed=Speed(cuda_graph=True, compile_mode="default", max_seq_len=512))
        frames = torch.randint(0, 1024, (3, 1, 8), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
        logits.append([backend.prefill(prompt_inputs[:1], 20)] + [backend.step(frame) for frame in frames])
        assert (launches.item() > 0) == kernel
        taking = [module.one_row_scales is not None for module in backend.network.modules()
                  if isinstance(module, Int4RowsLinear)]
        assert taking and any(taking) == kernel
    for mine, theirs in zip(*logits):
        assert ((mine - theirs).norm() / theirs.norm()).item() < COMPILED_BOUNDS["int4"]


@HOPPER
def test_int4_one_row_layers_fuse_around_the_gluon_products_what_the_network_does(tiny_trtllm, prompt_inputs):
    """one_row.py's layers with int4 weights (int4_one_row.py's kernel with the norm and RoPE into the caches, the
    residual adds, the norm and SiLU(gate) * up fused), captured, against the same engine's captured layers, whose
    products of one row are the same kernel unfused: a text-only and a voice-cloning prompt. Rows are paired 2 and
    32 blocks apart here (8 and 1024 at the 3B shape, which benchmarks/decode_step_gpu.py's fidelity covers). The
    fused work rounds as the network's does; the norms' reciprocal square root is approximate."""
    layers, kernels = (TorchBackend.from_checkpoint(tiny_trtllm, device="cuda", dtype=torch.bfloat16, quantised="int4",
                                                    speed=Speed(cuda_graph=True, max_seq_len=512, one_row_kernels=on))
                       for on in (False, True))
    assert layers.one_row is None and all(product.int4 for weights in kernels.one_row.layers if weights
                                          for product in (weights.qkv, weights.o, weights.gate_up, weights.down))
    frames = torch.randint(0, 1024, (4, 1, 8), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for prompt in (prompt_inputs[0], prompt_inputs[2]):
        want = [layers.prefill([prompt], 20)] + [layers.step(frame) for frame in frames]
        got = [kernels.prefill([prompt], 20)] + [kernels.step(frame) for frame in frames]
        assert torch.equal(got[0], want[0])  # the prefill is the network's in both (paired scales, same products)
        for mine, theirs in zip(got[1:], want[1:]):
            assert ((mine - theirs).norm() / theirs.norm()).item() < 1e-2
    assert kernels.states[1, 256].graph is not None  # guard: the steps replayed a captured graph


@pytest.mark.skipif("HIGGS_BENCH_3B" not in os.environ, reason="set HIGGS_BENCH_3B to a 3B-shape checkpoint")
@pytest.mark.parametrize("kind", sorted(BOUNDS))
def test_quantised_variants_at_full_size_stay_within_their_bounds(kind, prompt_inputs):
    ckpt = Path(os.environ["HIGGS_BENCH_3B"])
    reference = TorchBackend.from_checkpoint(ckpt, device="cuda", dtype=torch.bfloat16)
    candidate = TorchBackend.from_checkpoint(ckpt, device="cuda", dtype=torch.bfloat16, quantised=kind)
    report = fidelity(reference, candidate, prompt_inputs, 24)
    max_rel_l2, min_top1 = BOUNDS[kind]
    assert report["logits_rel_l2"] <= max_rel_l2 and report["top1_agreement"] >= min_top1, report
