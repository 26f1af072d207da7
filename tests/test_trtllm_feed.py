"""What the TensorRT-LLM runtime feeds the engine, and the request checks against engine limits, on the CPU."""

import pytest
import torch

from higgs_bench.backends.trtllm.feed import EngineLimits, StepFeed, check_kv_budget, check_engine_limits, context_inputs
from higgs_bench.errors import GenerationError
from higgs_bench.generate.inputs import PromptInputs

LIMITS = EngineLimits(max_batch_size=4, max_input_len=256, max_seq_len=512, max_num_tokens=512)


def unpack(feed) -> list[PromptInputs]:
    """Each row as the network sees it, read back from the packed feed."""
    ends = feed["last_token_ids"].tolist()
    rows = []
    for start, end in zip([0] + ends[:-1], ends):
        codes = feed["audio_codes"][start:end].long()
        mask = codes[:, 0] >= 0
        rows.append(PromptInputs(feed["input_ids"][start:end].long(), torch.where(mask[:, None], codes, 0), mask))
    return rows


def test_the_context_feed_holds_every_prompt_exactly(prompt_inputs):
    feed = context_inputs(prompt_inputs)
    assert feed["audio_codes"].dtype == feed["input_ids"].dtype == torch.int32
    for got, want in zip(unpack(feed), prompt_inputs, strict=True):
        assert torch.equal(got.token_ids, want.token_ids) and torch.equal(got.audio_mask, want.audio_mask)
        assert torch.equal(got.audio_codes, want.audio_codes)
    lengths = [len(p) for p in prompt_inputs]
    assert feed["context_lengths"].tolist() == feed["sequence_length"].tolist() == lengths
    starts = [0] + feed["last_token_ids"].tolist()[:-1]
    assert all(feed["position_ids"][s] == 0 for s in starts)  # each row's positions start afresh
    assert feed["host_request_types"].tolist() == [0, 0, 0]
    # the context step's KV length is the whole prompt, as GenerationSession._get_context_shape_buffer feeds it
    assert feed["host_past_key_value_lengths"].tolist() == lengths


def test_a_step_feeds_one_audio_position_after_each_rows_cache(prompt_inputs):
    context = torch.tensor([len(p) for p in prompt_inputs], dtype=torch.int32)
    feed = StepFeed(batch=3, cache_len=300, num_layers=2, placeholder_id=128016, device=torch.device("cpu"))
    feed.start(context)
    for _ in range(3):  # three frames already fed
        feed.inputs(torch.zeros((3, 8), dtype=torch.long))
        feed.advance()
    frame = torch.tensor([[1024] * 8, [5] * 8, [1025] * 8])
    inputs = feed.inputs(frame)
    past = context + 3
    assert inputs["input_ids"].tolist() == [128016] * 3 and torch.equal(inputs["audio_codes"], frame.int())
    assert inputs["position_ids"].tolist() == past.tolist()  # the new position is the row's cache size
    assert inputs["sequence_length"].tolist() == (past + 1).tolist()
    assert inputs["host_past_key_value_lengths"].tolist() == past.tolist()
    assert inputs["context_lengths"].tolist() == inputs["host_context_lengths"].tolist() == context.tolist()
    assert inputs["last_token_ids"].tolist() == [1, 2, 3] and inputs["host_request_types"].tolist() == [1, 1, 1]
    assert inputs["cache_indirection"].shape == (3, 1, 300)
    assert inputs["host_max_attention_window_sizes"].tolist() == [300, 300]


def test_a_step_allocates_nothing_new(prompt_inputs):
    """Every step hands the engine the same buffers, updated in place (no allocation, no host copy)."""
    feed = StepFeed(batch=3, cache_len=300, num_layers=2, placeholder_id=128016, device=torch.device("cpu"))
    feed.start(torch.tensor([len(p) for p in prompt_inputs]))
    first = {name: t.data_ptr() for name, t in feed.inputs(torch.ones((3, 8), dtype=torch.long)).items()}
    feed.advance()
    second = {name: t.data_ptr() for name, t in feed.inputs(torch.ones((3, 8), dtype=torch.long)).items()}
    assert first == second


def test_requests_within_the_engines_limits_pass(prompt_inputs):
    check_engine_limits(LIMITS, prompt_inputs, max_new_frames=200)


@pytest.mark.parametrize(
    "limits, frames, message",
    [
        (EngineLimits(2, 256, 512, 512), 10, "3 prompts exceed max_batch_size=2"),
        (EngineLimits(4, 20, 512, 512), 10, "exceeds max_input_len=20"),
        (EngineLimits(4, 256, 512, 40), 10, "exceed max_num_tokens=40"),
        (EngineLimits(4, 256, 300, 512), 400, "frames exceed max_seq_len=300"),
    ],
)
def test_requests_beyond_the_engines_limits_name_the_limit(prompt_inputs, limits, frames, message):
    with pytest.raises(GenerationError, match=message):
        check_engine_limits(limits, prompt_inputs, frames)


def test_the_kv_cache_budget_is_checked_before_allocation():
    check_kv_budget(4, 1000, 1024, free_bytes=10 * 2**20, fraction=0.9, max_tokens=None)
    with pytest.raises(GenerationError, match="kv_cache_max_tokens=3000"):
        check_kv_budget(4, 1000, 1024, free_bytes=10 * 2**20, fraction=0.9, max_tokens=3000)
    with pytest.raises(GenerationError, match="kv_cache_free_gpu_memory_fraction=0.1"):
        check_kv_budget(4, 1000, 1024, free_bytes=10 * 2**20, fraction=0.1, max_tokens=None)


def test_a_request_joining_a_slot_starts_its_row_and_leaves_the_others_going():
    """In-flight batching: the plugin takes lengths per row, so a joined row starts at its prompt length."""
    feed = StepFeed(batch=3, cache_len=300, num_layers=2, placeholder_id=128016, device=torch.device("cpu"))
    feed.start(torch.tensor([20, 30, 40]))
    for _ in range(5):
        feed.advance()
    feed.start_rows([1], torch.tensor([12]))
    inputs = feed.inputs(torch.zeros((3, 8), dtype=torch.long))
    assert inputs["position_ids"].tolist() == inputs["host_past_key_value_lengths"].tolist() == [25, 12, 45]
    assert inputs["sequence_length"].tolist() == [26, 13, 46]
    assert inputs["context_lengths"].tolist() == inputs["host_context_lengths"].tolist() == [20, 12, 40]
