"""In-flight batching: requests join free slots between steps and leave when they finish, and each gets
exactly the codes it gets alone."""

import random

import pytest
import torch

from higgs_bench.backends.pytorch.backend import TorchBackend
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.generate.loop import generate
from higgs_bench.errors import HiggsBenchError
from higgs_bench.generate.slots import Admission, Request, serve
from higgs_bench.model.config import read_config
from higgs_bench.model.prompt import encode_messages, tts_messages
from tests.parity import GREEDY

TEXTS = ["Hi.", "A short one.", "The birch canoe slid on the smooth planks.", "It is easy to tell the depth of a well.",
         "Four hours of steady work faced us, and then some more."]


class FakeClock:
    """Each reading moves time on by 5 ms; sleeping moves it by the time slept."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.005
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture(scope="module")
def backend(tiny_hf):
    return TorchBackend.from_checkpoint(tiny_hf)


@pytest.fixture(scope="module")
def requests_pool(tiny_hf, tokenizer, prompt_inputs):
    cfg = read_config(tiny_hf)
    return prompt_inputs + [expand_prompt(encode_messages(tokenizer, tts_messages(t)), cfg) for t in TEXTS]


@pytest.mark.parametrize("seed", [0, 1])
def test_every_request_gets_the_codes_it_gets_alone(backend, tiny_hf, requests_pool, seed):
    rng = random.Random(seed)
    requests = [Request(f"r{i}", prompt, max_frames=rng.randint(12, 60), arrival_s=rng.uniform(0, 0.3))
                for i, prompt in enumerate(requests_pool)]
    clock = FakeClock()
    served = serve(backend, requests, GREEDY, slots=3, clock=clock, sleep=clock.sleep)
    alone = TorchBackend.from_checkpoint(tiny_hf)
    for request, result in zip(requests, served, strict=True):
        want = generate(alone, [request.prompt], GREEDY, request.max_frames)
        assert torch.equal(result.streams, want.streams[0]), request.id
        assert result.eos_step == want.eos_step[0] and result.error is None
    by_slot = {}
    for result in served:
        by_slot.setdefault(result.slot, []).append(result)
    assert max(len(v) for v in by_slot.values()) > 1  # guard: slots were reused by later requests
    assert any(r.eos_step is not None for r in served) and any(r.eos_step is None for r in served)  # both endings


def test_two_hundred_requests_through_four_slots_all_complete_once(backend, requests_pool):
    rng = random.Random(7)
    requests = [Request(f"q{i}", rng.choice(requests_pool), max_frames=rng.randint(9, 20),
                        arrival_s=rng.uniform(0, 2.0)) for i in range(200)]
    clock = FakeClock()
    served = serve(backend, requests, GREEDY, slots=4, clock=clock, sleep=clock.sleep)
    assert [s.id for s in served] == [r.id for r in requests]
    assert all(s.error is None and s.streams is not None and len(s.streams) <= r.max_frames
               for s, r in zip(served, requests))
    for slot in {s.slot for s in served}:  # no slot held by two requests at once, none outside 0..3
        spans = sorted((s.admitted_s, s.finished_s) for s in served if s.slot == slot)
        assert 0 <= slot < 4 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert all(s.admitted_s >= s.arrival_s for s in served)  # nobody starts before it arrives


def test_a_request_too_long_is_refused_alone(backend, requests_pool):
    requests = [Request("ok", requests_pool[0], 20), Request("too-long", requests_pool[1], 10**6)]
    served = serve(backend, requests, GREEDY, slots=2)
    assert served[0].error is None and served[0].streams is not None
    assert served[1].streams is None and "positions" in served[1].error


def in_system(served, t):
    return sum(s.arrival_s <= t < s.finished_s for s in served)


def test_static_batching_admits_only_into_an_empty_batch_and_gives_the_same_codes(backend, requests_pool):
    rng = random.Random(3)
    requests = [Request(f"s{i}", rng.choice(requests_pool), max_frames=rng.randint(12, 40),
                        arrival_s=rng.uniform(0, 0.5)) for i in range(9)]
    runs = {}
    for batching in ("static", "inflight"):
        clock = FakeClock()
        runs[batching] = serve(backend, requests, GREEDY, slots=3, clock=clock, sleep=clock.sleep,
                               admission=Admission(batching))
    static = runs["static"]
    for late in static:  # no request joins while one admitted before it is still decoding
        earlier = [s for s in static if s.admitted_s < late.admitted_s]
        assert all(s.finished_s <= late.admitted_s for s in earlier), late.id
    assert len({s.admitted_s for s in static}) < len(static)  # guard: batches of several requests formed
    for a, b in zip(static, runs["inflight"]):  # the same request, the same speech, whichever the batching
        assert torch.equal(a.streams, b.streams) and a.eos_step == b.eos_step
    assert max(s.finished_s for s in static) > max(s.finished_s for s in runs["inflight"])  # idle slots cost


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_closed_loop_keeps_its_clients_busy_and_no_more(backend, requests_pool, concurrency):
    requests = [Request(f"c{i}", requests_pool[i % len(requests_pool)], max_frames=15 + i) for i in range(7)]
    clock = FakeClock()
    served = serve(backend, requests, GREEDY, slots=4, clock=clock, sleep=clock.sleep,
                   admission=Admission("inflight", concurrency))
    assert all(s.error is None for s in served)
    assert max(in_system(served, s.arrival_s) for s in served) == concurrency
    finishes = sorted(s.finished_s for s in served)
    for k, s in enumerate(sorted(served, key=lambda s: s.arrival_s)):  # request k is sent once k - c have finished
        if k >= concurrency:
            assert s.arrival_s >= finishes[k - concurrency]
    assert all(s.admitted_s - s.arrival_s < 0.1 for s in served)  # slots to spare: nobody queues


def test_a_request_beyond_the_slots_positions_is_refused_alone(backend, requests_pool):
    short, long = requests_pool[0], max(requests_pool, key=len)
    requests = [Request("fits", short, 20), Request("too-wide", long, 20)]
    served = serve(backend, requests, GREEDY, slots=2, positions=len(short) + 20)
    assert served[0].error is None and "above the slots'" in served[1].error


def test_unknown_batching_is_refused():
    with pytest.raises(HiggsBenchError, match="batching='dynamic'"):
        Admission("dynamic")
