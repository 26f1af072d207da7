"""A process's first costs (bench/process.py) are paid once, before any variant's build or start is timed, and
only the parts a variant needs."""

import torch
from torch._dynamo.utils import counters

from higgs_bench.bench import process


def test_each_first_cost_is_paid_once_and_only_where_a_variant_needs_it(monkeypatch):
    monkeypatch.setattr(process, "PAID", set())
    torch._dynamo.reset()  # as a fresh process: no earlier run's first compilation in dynamo's caches
    cpu = torch.device("cpu")
    assert process.pay_first_costs(cpu, None, compiled=False) == 0.0 and process.PAID == set()  # eager fp32
    misses = counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"]
    assert process.pay_first_costs(cpu, "int8", compiled=True) > 0
    assert process.PAID == {"torchao", "inductor"}
    assert counters["inductor"]["fxgraph_cache_miss"] + counters["inductor"]["fxgraph_cache_hit"] == misses + 1
    assert process.pay_first_costs(cpu, "int8", compiled=True) == 0.0  # the next variant finds them paid
