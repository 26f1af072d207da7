"""Memory figures belong to the measurement they describe: peak RSS starts afresh, the KV cache counted is
the one allocated, and releasing a backend's earlier shapes leaves one batch's state alive."""

import os
import sys
import time

import numpy as np
import pytest
import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.bench.memory import GpuMemoryMonitor, MeasuredMemory
from higgs_bench.bench.provenance import gpu_state


def test_peak_rss_is_per_measurement_not_the_process_lifetime():
    device = torch.device("cpu")
    with MeasuredMemory(device) as big:
        block = np.ones(400_000_000 // 8)  # 400 MB, touched
        del block
    with MeasuredMemory(device) as small:
        pass
    first, second = big.report(), small.report()
    assert first["rss_since"] == "start" and first["rss_peak_gb"] - second["rss_peak_gb"] > 0.3


def test_the_kv_cache_counted_is_the_one_allocated_and_release_frees_it(tiny_hf, prompt_inputs):
    backend = TorchBackend.from_checkpoint(tiny_hf)
    backend.prefill(prompt_inputs, 40)
    cfg, positions = backend.config, max(len(p) for p in prompt_inputs) + 40
    expected = 2 * cfg.num_layers * len(prompt_inputs) * cfg.num_kv_heads * positions * cfg.head_dim * 4  # fp32
    assert backend.kv_cache_bytes() == expected
    backend.prefill(prompt_inputs[:1], 40)  # a second shape: both are kept for reuse ...
    assert backend.kv_cache_bytes() > expected
    backend.release()  # ... until released, so that a batch size is measured with its own state alone
    assert backend.kv_cache_bytes() == 0


FAKE_NVML = '''
class NVMLError(Exception):
    pass

NVML_CLOCK_SM, NVML_TEMPERATURE_GPU = 1, 0
_used = [1000]

def nvmlInit():
    pass

def nvmlDeviceGetHandleByIndex(index):
    return index

class _Memory:
    def __init__(self, used):
        self.used = used

def nvmlDeviceGetMemoryInfo(handle):
    _used[0] += 1000  # every sample sees more memory in use
    return _Memory(_used[0])

def nvmlDeviceGetClockInfo(handle, kind):
    return 1980

def nvmlDeviceGetTemperature(handle, kind):
    return 41

def nvmlDeviceGetPowerUsage(handle):
    return 250000

def nvmlDeviceGetTotalEnergyConsumption(handle):
    raise NVMLError("not supported")
'''


@pytest.fixture
def fake_nvml(tmp_path, monkeypatch):
    """A stand-in pynvml (this machine has no GPU), for this process and the sampler's child process."""
    (tmp_path / "pynvml.py").write_text(FAKE_NVML)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)


def test_the_nvml_sampler_runs_in_a_child_process_and_reports_the_peak(fake_nvml):
    with GpuMemoryMonitor(torch.device("cuda:0"), interval_s=0.001) as monitor:
        time.sleep(0.05)
    assert monitor.baseline_bytes == 2000 and monitor.peak_bytes > monitor.baseline_bytes


def test_the_gpu_state_reads_what_nvml_reports_and_leaves_out_what_it_does_not(fake_nvml):
    state = gpu_state(torch.device("cuda:0"))
    assert state == {"sm_clock_mhz": 1980, "temperature_c": 41, "power_w": 250.0, "energy_mj": None}
    assert gpu_state(torch.device("cpu")) is None


def test_an_outer_measurement_keeps_the_peaks_its_inner_ones_reset():
    """A run measures each batch inside its whole-run measurement: the inner reset must not erase the
    outer's peak from before it."""
    device = torch.device("cpu")
    with MeasuredMemory(device) as run:
        block = np.ones(400_000_000 // 8)  # 400 MB before the inner measurement starts
        del block
        with MeasuredMemory(device) as batch:
            pass
    assert run.report()["rss_peak_gb"] - batch.report()["rss_peak_gb"] > 0.3
