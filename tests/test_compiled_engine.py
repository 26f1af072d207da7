"""The compiled torch engine: the same codes as eager decoding, built ahead of time into engines/, reused
from its artefacts without compiling again, and rebuilt when they are damaged."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton  # the test extras' (CUDA torch brings it)
import triton.language as tl
from omegaconf import OmegaConf
from torch._dynamo.utils import counters
from torch._inductor import async_compile
from torch._inductor.async_compile import CompiledTritonKernels
from torch._inductor.codecache import PyCodeCache
from triton.backends.compiler import GPUTarget
from triton.runtime.jit import JITFunction

from higgs_bench.backends.pytorch import engine, precompiled
from higgs_bench.backends.pytorch.backend import Speed, TorchBackend, compile_options, prompt_bucket, text_only
from higgs_bench.backends.pytorch.engine import Artefacts, inductor_compiles, load_engine, save_artefacts
from higgs_bench.backends.pytorch.engine_weights import read_weights, save_weights
from higgs_bench.backends.pytorch.kernel_cache import FOLDER as KERNEL_FOLDER
from higgs_bench.backends.pytorch.kernel_cache import KernelCache, TritonCompilations
from higgs_bench.backends.pytorch.precompiled import AOT_COMPILE, read_compilation
from higgs_bench.backends.pytorch.network import Rows
from higgs_bench.bench import process, runner
from higgs_bench.bench.build import checkpoint_stamp, stale_reason, torch_speed
from higgs_bench.errors import ConfigError, DamagedArtefact
from higgs_bench.generate.loop import generate
from tests.parity import GREEDY

ONE_SHAPE = ["scenario.texts=['Hello world.']", "scenario.timing_frames=14",
             "scenario.repeats=1", "scenario.quality_max_frames=40", "scenario.fidelity_frames=0", "asr=none",
             "backend.compile=true", "backend.compile_mode=default", "scenario.min_frame_samples=0"]


def test_compiled_and_eager_decoding_give_identical_greedy_codes(tiny_hf, prompt_inputs):
    eager = generate(TorchBackend.from_checkpoint(tiny_hf), prompt_inputs, GREEDY, 40).streams
    compiled = TorchBackend.from_checkpoint(tiny_hf, speed=Speed(compile_mode="default", max_seq_len=2048))
    graphs = counters["stats"]["unique_graphs"]
    assert torch.equal(generate(compiled, prompt_inputs, GREEDY, 40).streams, eager)
    # the compiled layer really ran, and one compilation served every layer (build time ~ 1/num_layers)
    assert compiled.config.num_layers > 1 and counters["stats"]["unique_graphs"] == graphs + 1


def test_one_row_steps_run_their_own_compiled_layer_which_alone_tunes_fp8_on_cuda(tiny_hf, prompt_inputs,
                                                                                 monkeypatch):
    """Tuning pays where products become Triton reductions, at one row; fp8's other shapes took 35-74 s each to
    tune for frames no faster (H200), so only its one-row layer is compiled with tuning."""
    backend = TorchBackend.from_checkpoint(tiny_hf, speed=Speed(compile_mode="default", max_seq_len=2048))
    seen = set()

    def spy(one_row, layer):
        return lambda layer_module, h, *rest: seen.add((h.shape[0], one_row)) or layer(layer_module, h, *rest)

    backend.decode_layers = {one_row: spy(one_row, layer) for one_row, layer in backend.decode_layers.items()}
    generate(backend, prompt_inputs[:1], GREEDY, 10)
    generate(backend, prompt_inputs, GREEDY, 10)
    assert seen == {(1, True), (len(prompt_inputs), False)}
    cuda = torch.device("cuda")

    def setting(option, kind, one_row):
        return compile_options("default", kind, cuda, one_row).get(option, False)

    def tunes(kind, one_row):
        return setting("coordinate_descent_tuning", kind, one_row)

    assert [tunes("fp8", True), tunes("fp8", False), tunes("int8", True), tunes("int8", False), tunes(None, True)] \
        == [True, False, True, False, False]
    assert compile_options("default", "int8", cuda)["pattern_matcher"] is False  # no _weight_int8pack_mm at 64 rows
    # int8 searches all directions at one row only; its shapes of several rows tune nothing (one_byte_rows takes their
    # products)
    wide = "coordinate_descent_check_all_directions"
    assert [setting(wide, "int8", True), setting(wide, "int8", False)] == [True, False]
    # a tuned kernel read back from the cache must not get a second launcher, which would be tuned again
    assert all(compile_options("default", kind, cuda, True)["dynamic_scale_rblock"] is False for kind in ("int8", "fp8"))
    # int8 products of more rows than one_byte_rows takes (prefills): conversion + cuBLAS by default (a fast build);
    # Triton GEMM templates that convert the weights as they load them where the mode autotunes GEMMs, without
    # cuBLAS, which would win unfairly
    default = compile_options("default", "int8", cuda)
    assert not default.get("max_autotune_gemm") and default.get("max_autotune_gemm_backends") != "TRITON"
    autotuned = "max-autotune-no-cudagraphs"
    assert compile_options(autotuned, "int8", cuda)["max_autotune_gemm_backends"] == "TRITON"
    assert "TRITON" != compile_options(autotuned, "int8", cuda, one_row=True).get("max_autotune_gemm_backends")
    assert "TRITON" != compile_options(autotuned, None, cuda).get("max_autotune_gemm_backends")
    # int4's one-row step where int4_one_row.py's kernel runs: Inductor's kernels launched with PDL, so that the
    # kernel's weights load while the kernel before it ends; not without the kernel (tinygemm's step was slower so)
    pdl = "triton.enable_pdl"
    monkeypatch.setattr("higgs_bench.backends.pytorch.int4_one_row.runs_on", lambda device: device.type == "cuda")
    assert [setting(pdl, "int4", True), setting(pdl, "int4", False), setting(pdl, "int8", True)] == [True, False, False]
    monkeypatch.setattr("higgs_bench.backends.pytorch.int4_one_row.runs_on", lambda device: False)
    assert not setting(pdl, "int4", True)


def test_shapes_that_tune_reductions_compile_their_kernels_in_the_process(monkeypatch):
    """Inductor's compile workers send kernels back without the mark of a config that coordinate descent found, and
    a sweep's later variants compile in them entirely: tuned shapes compile in the process, cold builds too, so
    that a variant builds alike alone and in a sweep. Untuned ones keep the workers."""
    threads = []
    workers = async_compile.get_compile_threads
    monkeypatch.setattr(async_compile, "get_compile_threads", lambda: threads.append(workers()) or threads[-1])
    cuda = torch.device("cuda")  # the options of CUDA engines; the kernels compile for the CPU here
    for kind, one_row, in_process in (("fp8", True, True), ("int8", True, True), ("int8", False, False),
                                      ("fp8", False, False), (None, True, False)):
        threads.clear()
        torch._dynamo.reset()
        options = compile_options("default", kind, cuda, one_row) | {"fx_graph_cache": False}
        torch.compile(lambda x: (x * x).sum(-1).relu(), dynamic=False, options=options)(torch.rand(2, 8))
        assert threads and set(threads) == ({1} if in_process else {torch._inductor.config.compile_threads})


def test_the_compiled_prefill_computes_the_eager_prefill_with_and_without_audio(tiny_hf, prompt_inputs):
    """What a captured prefill runs on a GPU (backend.prefill_graphs): its layers compiled, a prompt with audio
    through both MLPs selected per position, a text-only prompt through the text MLP alone."""
    backend = TorchBackend.from_checkpoint(tiny_hf, speed=Speed(compile_mode="default", max_seq_len=2048))
    text, clone = prompt_inputs[0], prompt_inputs[2]
    assert not text.audio_mask.any() and clone.audio_mask.any()
    for prompt, routing in ((text, text_only), (clone, Rows.selected)):
        width = prompt_bucket(len(prompt))
        tensors = backend._prompt_tensors([prompt], width, "cpu")
        eager = backend._run_prefill(backend._new_state(1, width), *tensors)
        compiled = backend._run_prefill(backend._new_state(1, width), *tensors, routing=routing,
                                        run_layer=backend.prefill_layer)
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def bench(tmp_path, run_dir, *extra, inductor: str | None = None, batch_sizes: str = "[1]"):
    """A run of one text, at one batch size unless told, in a fresh process with an empty Inductor cache of its own
    (only our artefacts can help it), or the cache folder `inductor` that runs share (one machine again)."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{inductor or run_dir}")}
    done = subprocess.run([sys.executable, "-m", "higgs_bench", *ONE_SHAPE, f"scenario.batch_sizes={batch_sizes}",
                           f"hydra.run.dir={run_dir}", *extra],
                          cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((tmp_path / run_dir / "benchmark_report.json").read_text())["build"]



def test_a_compile_while_measuring_is_counted():
    """What the record's build.compiled_during_run counts: any Inductor compilation, from its cache or not."""
    before = dict(counters["inductor"])
    doubled = torch.compile(lambda x: x * 2 + 1)
    assert torch.equal(doubled(torch.ones(3)), torch.full((3,), 3.0))
    assert sum(inductor_compiles(since=before).values()) == 1


@pytest.mark.skipif(not hasattr(triton, "knobs"), reason="Triton < 3.4 has no knobs")
def test_a_triton_kernel_compiled_while_measuring_is_counted_and_told(compose_cfg, tmp_path, monkeypatch, capsys):
    """What the record's build.compiled_during_run counts of Triton: kernels compiled after the start, in the
    engine folder (an eager prefill's rows kernels: on an H200 a run at batch 2 compiled int8's two, unseen) and
    outside it. The user hears it where it happened."""
    measure_quality = runner.measure_quality

    def compiling(cfg, backend, *args):
        compile_for_hopper()  # as a kernel's first launch compiles it, outside the engine folder
        with backend.kernel_cache.in_use():  # and in it
            compile_for_hopper()
        return measure_quality(cfg, backend, *args)

    monkeypatch.setattr(runner, "measure_quality", compiling)
    monkeypatch.setattr(process, "PAID", set())  # the runs in this process pay its first costs again
    cfg = compose_cfg(*ONE_SHAPE, f"build.engines_dir={tmp_path / 'engines'}")
    records, heard = [], []
    with triton.knobs.cache.scope():
        triton.knobs.cache.dir = str(tmp_path / "machine")  # this machine's Triton cache, empty
        for run_dir in (tmp_path / "first", tmp_path / "second"):
            run_dir.mkdir()  # as Hydra makes it
            records.append(runner.run(cfg, run_dir))
            heard.append(capsys.readouterr().err)
    assert [record["status"] for record in records] == ["ok", "ok"]
    assert [record["build"]["compiled_during_run"]["triton_kernels"] for record in records] == [2, 0]
    told = f"{records[0]['build']['dir']}: 2 Triton kernels compiled while measuring (build.compiled_during_run)"
    assert told in heard[0] and "compiled while measuring" not in heard[1]


@pytest.mark.skipif(not hasattr(triton, "knobs"), reason="Triton < 3.4 has no knobs")
def test_an_eager_prefill_keeps_the_kernels_it_launches_in_the_engine_folder(tiny_hf, prompt_inputs, tmp_path,
                                                                           monkeypatch):
    """A prefill of several prompts runs eagerly, and int8's and fp8's products of several rows there launch the
    rows kernel outside the compiled functions. Triton compiles it into the engine folder, as the engine's other
    kernels: in whichever Triton cache the process had set up, an H200 start after its build compiled int8's two
    again, during the run."""
    backend, folders = TorchBackend.from_checkpoint(tiny_hf), []
    run_prefill = backend._run_prefill

    def recorded(*args, **kwargs):
        folders.append(triton.knobs.cache.dir)
        return run_prefill(*args, **kwargs)

    monkeypatch.setattr(backend, "_run_prefill", recorded)
    backend.keep_kernels_in(KernelCache(tmp_path / KERNEL_FOLDER))
    backend.prefill(prompt_inputs[:2], 10)
    assert folders == [str(tmp_path / KERNEL_FOLDER)]


def test_an_engine_start_names_each_part_as_it_begins(tiny_hf):
    """What the build's spinner shows: the weights, then each shape with how many parts there are; shapes that
    share a cache bucket are timed under one name. On a CPU nothing captures prefills or frame choosers."""
    parts = []
    _, times = load_engine(tiny_hf, torch.device("cpu"), torch.float32, None, Speed(max_seq_len=2048),
                           [(1, 100), (2, 300), (1, 200)], prefills=[(64, False)], choosers=[(GREEDY, 1)],
                           on_part=parts.append)
    assert parts == ["weights", "1x256 (1 of 3)", "2x512 (2 of 3)", "1x256 (3 of 3)"]
    assert set(times["warm_s_per_shape"]) == {"1x256", "2x512"}


@pytest.mark.skipif(not AOT_COMPILE, reason="this torch cannot compile functions ahead of time")
def test_a_second_run_loads_its_functions_compiled_ahead_of_time_and_traces_nothing(tmp_path):
    """An unquantised engine keeps each compiled function whole (precompiled.py): a start loads them without dynamo or
    Inductor, and a damaged one is rebuilt."""
    _, cold = bench(tmp_path, "cold")
    assert cold["reused"] is False and cold["settings"]["shapes"] == [[1, 256]]
    assert cold["compile"]["precompiled"]["compiled"] == len(cold["precompiled"]) >= 1
    assert cold["compile_cache"]["bytes"] > 0 and all(saved["bytes"] > 0 for saved in cold["precompiled"])
    _, warm = bench(tmp_path, "warm")
    assert warm["reused"] is True and warm["start"]["artefacts_loaded"] is True
    assert warm["start"]["precompiled"] == {"loaded": len(cold["precompiled"]), "compiled": 0}
    assert warm["start"]["kernels"] == {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 0, "kernels_tuned": 0}
    # each process paid Inductor's first compilation before its build or start was timed (bench/process.py)
    assert cold["process_first_s"] > 0 and warm["process_first_s"] > 0
    # the build planned every shape the run took (a compile while measuring would be counted: next test)
    assert cold["compiled_during_run"] == warm["compiled_during_run"] == {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 0,
                                                                         "ahead_of_time": 0, "triton_kernels": 0}

    for damaged in ("compile_cache.bin", cold["precompiled"][0]["file"]):
        path = tmp_path / warm["dir"] / damaged
        path.write_bytes(path.read_bytes()[:100])
        done, rebuilt = bench(tmp_path, f"rebuilt-{path.stem}")
        assert f"{damaged} is damaged" in done.stderr and rebuilt["reused"] is False
        assert rebuilt["compile"]["precompiled"]["compiled"] >= 1


def test_compiled_engines_keep_their_compiled_functions_whole_unless_told_not_to(tiny_hf, compose_cfg):
    """backend.precompile reaches the engine's speed settings; with it, a compiled engine's decode layers, prefill
    layer and one-row step ends are compiled ahead of time (where this torch can), quantised engines' too (they
    hold torchao's tensors as plain ones, quantised_linears.py)."""
    cpu = torch.device("cpu")

    def precompiled(quantised=None, *overrides):
        speed = torch_speed(compose_cfg("backend=torch", "backend.compile=true", *overrides), cpu)
        return len(TorchBackend.from_checkpoint(tiny_hf, quantised=quantised, speed=speed).precompiled())

    assert precompiled() == precompiled("int8") == (5 if AOT_COMPILE else 0)
    assert precompiled(None, "backend.precompile=false") == precompiled("int8", "backend.precompile=false") == 0


@pytest.mark.skipif(not AOT_COMPILE, reason="this torch cannot compile functions ahead of time")
def test_a_quantised_engines_second_run_loads_its_functions_and_traces_nothing(tmp_path):
    """An int8 engine keeps its compiled functions whole as an unquantised one does: a start loads them and
    compiles nothing, and it generates what the build's run generated."""
    _, cold = bench(tmp_path, "cold", "precision=int8")
    assert cold["compile"]["precompiled"]["compiled"] == len(cold["precompiled"]) >= 1
    _, warm = bench(tmp_path, "warm", "precision=int8")
    assert warm["reused"] is True and warm["start"]["precompiled"] == {"loaded": len(cold["precompiled"]),
                                                                       "compiled": 0}
    assert warm["start"]["kernels"] == {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 0, "kernels_tuned": 0}
    speech = [sorted(path.read_bytes() for path in (tmp_path / run).rglob("*.wav")) for run in ("cold", "warm")]
    assert speech[0] and speech[0] == speech[1]
    assert cold["weights"]["bytes"] > 0 and warm["start"]["weights_from"] == "engine"

    weights = tmp_path / warm["dir"] / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 1  # the same size: found as the weights load, and the engine built again before any timing
    weights.write_bytes(bytes(data))
    done, flipped = bench(tmp_path, "flipped", "precision=int8")
    why = "weights.safetensors is damaged (its tensors' sums differ from build.json's)"
    assert f"rebuilding {warm['dir']}: {why}" in done.stderr
    assert flipped["reused"] is False and flipped["rebuilt_because"] == why and "start" not in flipped
    weights.write_bytes(weights.read_bytes()[:-10])
    done, cut = bench(tmp_path, "cut", "precision=int8")
    assert "weights.safetensors is damaged (" in done.stderr and cut["reused"] is False


def test_a_quantised_engine_starts_from_the_weights_it_kept_without_reading_the_checkpoints(tiny_hf, tmp_path,
                                                                                              prompt_inputs):
    """A quantised engine keeps its weights as the build quantised them (engine_weights.py): a start reads them,
    not the checkpoint's weight files (here gone), and decodes what the built engine decoded."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_hf, checkpoint)
    speed, cpu = Speed(compile_mode="default", max_seq_len=2048), torch.device("cpu")
    built, times = load_engine(checkpoint, cpu, torch.bfloat16, "int8", speed, [(1, 100)])
    artefacts = save_artefacts(tmp_path, built)
    assert times["weights_from"] == "checkpoint" and artefacts.weights["bytes"] > 0
    for weights in checkpoint.glob("*.safetensors"):
        weights.unlink()
    started, times = load_engine(checkpoint, cpu, torch.bfloat16, "int8", speed, [(1, 100)], artefacts)
    assert times["weights_from"] == "engine"
    assert started.network.state_dict().keys() == built.network.state_dict().keys()
    assert generate(started, prompt_inputs, GREEDY, 24).streams.equal(generate(built, prompt_inputs, GREEDY, 24).streams)


def test_kept_weights_that_differ_from_what_the_build_wrote_are_refused_as_they_load(tiny_hf, tmp_path):
    """Their sums are checked where they land; a flipped byte, or a file that is not safetensors, is damage."""
    backend = TorchBackend.from_checkpoint(tiny_hf, dtype=torch.bfloat16, quantised="int8")
    record = save_weights(tmp_path, backend.network)
    assert read_weights(tmp_path, record, torch.device("cpu")).keys() == backend.network.state_dict().keys()
    path = tmp_path / record["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedArtefact, match="weights.safetensors is damaged"):
        read_weights(tmp_path, record, torch.device("cpu"))
    path.write_bytes(b"not safetensors")
    with pytest.raises(DamagedArtefact, match="weights.safetensors is unreadable"):
        read_weights(tmp_path, record, torch.device("cpu"))


def test_an_engine_is_stale_once_its_checkpoints_files_change(tiny_hf, tmp_path):
    """An engine that holds the weights must not outlive them: the build record keeps each checkpoint file's
    size and time of change, and any difference names the files and rebuilds it."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_hf, checkpoint)
    settings, out = {"model": str(checkpoint)}, tmp_path / "engine"
    saved = {"settings": settings, "dir": str(out), "size_bytes": 1, "checkpoint": checkpoint_stamp(checkpoint)}
    assert stale_reason(saved, settings, out, checkpoint_stamp(checkpoint)) is None
    weights = next(checkpoint.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert stale_reason(saved, settings, out, checkpoint_stamp(checkpoint)) == \
        f"the checkpoint's files changed since the build ({weights.name})"


@pytest.mark.skipif(not AOT_COMPILE, reason="this torch cannot compile functions ahead of time")
def test_a_failed_compilation_ahead_of_time_names_the_setting_that_goes_around_it(tiny_hf, tmp_path, monkeypatch):
    """torch's aot_compile is experimental: where it fails to compile or to load a function, the user hears which
    and that backend.precompile=false takes dynamo's path instead."""
    speed = Speed(compile_mode="default", max_seq_len=2048)
    backend = TorchBackend.from_checkpoint(tiny_hf, speed=speed)
    backend.warm([(1, 100)])
    saved = backend.decode_layers[True].save(tmp_path)
    fresh = TorchBackend.from_checkpoint(tiny_hf, speed=speed)

    def broken(*args, **kwargs):
        raise RuntimeError("unpickling failed\nmore detail")

    monkeypatch.setattr(torch.compiler, "load_compiled_function", broken)
    with pytest.raises(ConfigError, match=r"loading .*decode-one-row-0.bin failed \(RuntimeError: unpickling "
                                          r"failed\); backend.precompile=false"):
        fresh.decode_layers[True].load(tmp_path, saved)
    monkeypatch.setattr(fresh.decode_layers[True].compiled, "aot_compile", broken)
    with pytest.raises(ConfigError, match="compiling decode-one-row ahead of time failed .*backend.precompile=false"):
        fresh.warm([(1, 100)])


@pytest.mark.skipif(not AOT_COMPILE or not hasattr(triton, "knobs"),
                    reason="this torch cannot compile functions ahead of time, or Triton < 3.4 has no knobs")
def test_a_build_loads_each_function_it_keeps_into_its_folder_as_a_start_loads_them(tiny_hf, tmp_path,
                                                                                     monkeypatch):
    """Loading a kept function has Triton compile the user-defined kernels inside it (int8's and fp8's rows
    kernels), and those whose configs coordinate descent tuned. The build loads each one back in its own process
    (not in Inductor's compile workers) with the engine folder as Triton's cache, and without the modules and
    kernels it holds in memory, as a fresh process would; so does a start, which then finds them there (H200, int8:
    a start compiled four rows kernels the build had compiled in the workers, 0.5-1.8 s; with its one-row step
    compiled, the ten kernels it tuned). The build's own modules and kernels are back afterwards. A function that
    does not load fails the build, not the next start."""
    loads, folder = [], str(tmp_path / KERNEL_FOLDER)

    def recorded(path):
        modules, kernels = PyCodeCache.modules_no_attr, CompiledTritonKernels._cache
        set_aside = (modules is not process_in_memory[0] and planted not in modules
                     and kernels is not process_in_memory[1])
        loads.append((path.name, torch._inductor.config.compile_threads, triton.knobs.cache.dir, set_aside))
        return read_compilation(path)

    monkeypatch.setattr(engine, "read_compilation", recorded)
    monkeypatch.setattr(precompiled, "read_compilation", recorded)
    speed, cpu = Speed(compile_mode="default", max_seq_len=2048), torch.device("cpu")
    built, _ = load_engine(tiny_hf, cpu, torch.float32, None, speed, [(1, 100)])
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 4)  # as a machine with workers would have
    process_in_memory, planted = (PyCodeCache.modules_no_attr, CompiledTritonKernels._cache), str(tmp_path / "mine.py")
    PyCodeCache.modules_no_attr[planted] = None  # a module this process has loaded
    artefacts = save_artefacts(tmp_path, built)
    into_the_folder = [(Path(saved["file"]).name, 1, folder) for saved in artefacts.precompiled]
    assert into_the_folder and loads == [(*load, True) for load in into_the_folder]
    assert PyCodeCache.modules_no_attr is process_in_memory[0] and CompiledTritonKernels._cache is process_in_memory[1]
    assert planted in PyCodeCache.modules_no_attr
    del PyCodeCache.modules_no_attr[planted]
    loads.clear()
    _, times = load_engine(tiny_hf, cpu, torch.float32, None, speed, [(1, 100)], artefacts,
                           kernel_folder=tmp_path / KERNEL_FOLDER)
    assert times["precompiled"]["loaded"] == len(into_the_folder) and [load[:3] for load in loads] == into_the_folder

    def broken(*args, **kwargs):
        raise RuntimeError("unpickling failed")

    monkeypatch.setattr(torch.compiler, "load_compiled_function", broken)
    (tmp_path / "again").mkdir()
    with pytest.raises(ConfigError, match=r"loading .*decode-one-row-0.bin failed .*backend.precompile=false"):
        save_artefacts(tmp_path / "again", built)


def test_a_forced_build_compiles_from_an_empty_inductor_cache_and_its_artefacts_serve_the_next_run(tmp_path):
    """build.force is a cold build, as on a new machine: in the machine's Inductor cache (shared by these runs) it
    would take the kernels, and their tuning, of the build it replaces, and its time would not be a cold build's.
    An int8 engine whose functions are not compiled ahead of time (backend.precompile=false): its start traces
    them again and finds each graph in the artefacts (functions compiled ahead of time skip the cache)."""
    traced = ("precision=int8", "backend.precompile=false")
    _, first = bench(tmp_path, "first", *traced, inductor="machine")
    _, forced = bench(tmp_path, "forced", *traced, "build.force=true", inductor="machine")
    compiled = first["compile"]["kernels"]["fxgraph_cache_miss"]
    assert forced["reused"] is False and forced["compile"]["kernels"]["fxgraph_cache_hit"] == 0
    assert forced["compile"]["kernels"]["fxgraph_cache_miss"] == compiled >= 1
    _, after = bench(tmp_path, "after", *traced, inductor="machine")
    assert after["reused"] is True and after["compile_cache"] == forced["compile_cache"]
    assert after["start"]["kernels"] == {"fxgraph_cache_hit": compiled, "fxgraph_cache_miss": 0, "kernels_tuned": 0}
    assert first["precompiled"] == [] and after["start"]["precompiled"] == {"loaded": 0, "compiled": 0}


def test_a_start_from_artefacts_compiles_its_kernels_without_the_compile_workers(tiny_hf, tmp_path, monkeypatch):
    """Inductor's compile workers send each kernel back pickled, which drops the mark that coordinate descent found
    its cached config, so a warm start in the workers tunes again (H200: 66 of int8's 76 kernels, 45 s). A cold
    build of untuned shapes, as here, keeps the workers (tuned shapes compile in the process through their own
    options: the test above)."""
    doubled = torch.compile(lambda x: x * 2)
    doubled(torch.ones(3))
    (tmp_path / "compile_cache.bin").write_bytes(data := torch.compiler.save_cache_artifacts()[0])
    artefacts = Artefacts(tmp_path, {"file": "compile_cache.bin", "sha256": hashlib.sha256(data).hexdigest()})
    threads = []
    monkeypatch.setattr(TorchBackend, "warm", lambda self, shapes: threads.append(
        torch._inductor.config.compile_threads))
    speed, cpu = Speed(compile_mode="default", max_seq_len=2048), torch.device("cpu")
    load_engine(tiny_hf, cpu, torch.float32, None, speed, [(1, 100)])
    _, times = load_engine(tiny_hf, cpu, torch.float32, None, speed, [(1, 100)], artefacts)
    assert times["artefacts_loaded"] and threads == [torch._inductor.config.compile_threads, 1]


def add_one(x_ptr, N: tl.constexpr):
    i = tl.arange(0, N)
    tl.store(x_ptr + i, tl.load(x_ptr + i) + 1)


def compile_for_hopper() -> None:
    """add_one compiled for an H100's target, as a one-row kernel's first launch compiles it (Triton compiles
    without a GPU; launching would need one). JITFunction directly: the tests' TRITON_INTERPRET would make
    @triton.jit an interpreted function."""
    source = triton.compiler.ASTSource(JITFunction(add_one), signature={"x_ptr": "*fp32", "N": "constexpr"},
                                       constexprs={"N": 16})
    triton.compile(source, target=GPUTarget("cuda", 90, 32))


@pytest.mark.skipif(not hasattr(triton, "knobs"), reason="Triton < 3.4 has no knobs")
def test_kernels_triton_compiles_for_an_engine_are_kept_in_its_folder_recorded_and_checked(tiny_hf, tmp_path):
    """An engine's own Triton kernels (one_row.py's) compile into its folder and load from it at the next start,
    whatever Triton's cache folder is otherwise in the process (an H200 bf16 start compiled them again: 3.7 s);
    the build records each file, and a damaged one rebuilds the engine."""
    before = (triton.knobs.cache.dir, os.environ.get("TRITON_CACHE_DIR"))
    cache = KernelCache(tmp_path / KERNEL_FOLDER)
    for _ in range(2):
        with cache.in_use():
            compile_for_hopper()
    assert cache.counts() == {"loaded": 1, "compiled": 1}
    assert (triton.knobs.cache.dir, os.environ.get("TRITON_CACHE_DIR")) == before  # the process's cache as it was
    torch.compile(lambda x: x + 1)(torch.ones(2))  # something of Inductor's for the artefacts
    artefacts = save_artefacts(tmp_path, TorchBackend.from_checkpoint(tiny_hf))
    cubin = next(saved["file"] for saved in artefacts.kernels if saved["file"].endswith(".cubin"))
    assert [saved["file"] for saved in artefacts.kernels] == cache.files() and cubin.startswith(f"{KERNEL_FOLDER}/")
    assert artefacts.damage() is None
    (tmp_path / cubin).write_bytes(b"\0" * 8)
    assert artefacts.damage() == f"{cubin} is damaged (its digest differs from build.json's)"


def test_a_reused_engine_that_tunes_or_compiles_kernels_again_says_so_and_how_long_it_took(monkeypatch, capsys):
    """int8 over several shapes tuned 66 kernels again at a warm start (H200) until the start compiled without
    Inductor's workers, and every first start compiled four rows kernels until the build kept them; whatever else
    makes a start tune or compile again, the user hears it with the start's cost against the build, and a start
    that did neither stays quiet."""
    record = {"dir": "engines/int8-abc", "seconds": 144.0}
    start = {"load_s": 2.8, "warm_s": 59.3, "kernels": {"fxgraph_cache_hit": 7, "fxgraph_cache_miss": 0},
             "own_kernels": {"loaded": 5, "compiled": 0}}
    cfg = OmegaConf.create({"backend": {"name": "torch"}})
    expected = {(66, 0): "engines/int8-abc: this start tuned 66 kernels and took 62 s, 43% of",
                (0, 4): "engines/int8-abc: this start had Triton compile 4 kernels and took 62 s, 43% of",
                (66, 4): "this start tuned 66 kernels and had Triton compile 4 kernels and took", (0, 0): ""}
    for (tuned, compiled), said in expected.items():
        times = start | {"kernels": start["kernels"] | {"kernels_tuned": tuned},
                         "other_triton_kernels": {"loaded": 3, "compiled": compiled}}
        monkeypatch.setattr(runner, "load_torch_engine", lambda *args, times=times: ("engine", times))
        assert runner.load_backend(cfg, None, torch.device("cpu"), record, []) == "engine"
        assert record["start"] == times
        heard = capsys.readouterr().err
        assert said in heard if said else heard == ""


@pytest.mark.skipif(not hasattr(triton, "knobs"), reason="Triton < 3.4 has no knobs")
def test_a_start_counts_the_kernels_triton_compiles_or_loads_outside_the_engine_folder(tiny_hf, tmp_path,
                                                                                        monkeypatch):
    """What Triton compiles in the start's process outside the engine folder is counted in its record (the rows
    kernels inside int8's kept functions compiled so, unseen, at every first start on an H200)."""
    monkeypatch.setattr(TorchBackend, "warm", lambda self, shapes: compile_for_hopper())
    speed, cpu = Speed(compile_mode="default", max_seq_len=2048), torch.device("cpu")
    with triton.knobs.cache.scope():
        triton.knobs.cache.dir = str(tmp_path / "machine")  # this machine's Triton cache, empty
        counted = [load_engine(tiny_hf, cpu, torch.float32, None, speed, [(1, 100)], kernel_folder=tmp_path / "own")
                   [1] for _ in range(2)]
    assert [times["other_triton_kernels"] for times in counted] == [{"loaded": 0, "compiled": 1},
                                                                   {"loaded": 1, "compiled": 0}]
    assert [times["own_kernels"] for times in counted] == [{"loaded": 0, "compiled": 0}] * 2
    # within the engine folder's cache a compilation is the folder's, and the count outside it resumes after
    elsewhere, own = TritonCompilations(), KernelCache(tmp_path / "own")
    with triton.knobs.cache.scope(), elsewhere.listening():
        triton.knobs.cache.dir = str(tmp_path / "another machine")
        compile_for_hopper()
        with own.in_use():
            compile_for_hopper()
        compile_for_hopper()
    assert elsewhere.counts() == {"loaded": 1, "compiled": 1} and own.counts() == {"loaded": 0, "compiled": 1}
