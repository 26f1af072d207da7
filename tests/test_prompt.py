"""The chat layout: our token ids against Boson's own builder, and the errors for bad requests."""

import numpy as np
import pytest

from higgs_bench.errors import PromptError
from higgs_bench.generate.inputs import expand_prompt
from higgs_bench.model.config import read_config
from higgs_bench.model.prompt import DEFAULT_SCENE, INSTRUCTION, Message, encode_messages, system_text, tts_messages
from tests.oracles.venvs import run_oracle

AUDIO = np.zeros((8, 4), dtype=np.int64)
CONVERSATIONS = {
    "plain": [Message("system", INSTRUCTION), Message("user", "Hello world.")],
    "scene": [Message("system", system_text(DEFAULT_SCENE)),
              Message("user", "It's 3:45 p.m. — “quoted”, 東京!\nA second line.")],
    "voice cloning": tts_messages("Say it like me.", reference_text="This is my voice.", reference_codes=AUDIO),
    "multi-speaker": [Message("system", system_text("A busy cafe.", speakers=("feminine", "masculine"))),
                      Message("user", "[SPEAKER0] Hi there. [SPEAKER1] Hello, how are you?")],
    "two reference clips": [Message("system", INSTRUCTION), Message("user", "First."), Message("assistant", AUDIO),
                            Message("assistant", AUDIO), Message("user", "Third.")],
}


def as_oracle_messages(messages):
    return [{"role": m.role, "audio": True} if not isinstance(m.content, str) else {"role": m.role, "text": m.content}
            for m in messages]


@pytest.mark.oracle
def test_token_ids_match_boson_prepare_chatml_sample(tiny_boson, tokenizer, tmp_path):
    request = {"model_dir": str(tiny_boson), "task": "prompt",
               "conversations": [as_oracle_messages(m) for m in CONVERSATIONS.values()]}
    reply = run_oracle("boson", "boson_oracle.py", request, tmp_path)
    for i, (name, messages) in enumerate(CONVERSATIONS.items()):
        ours = encode_messages(tokenizer, messages).token_ids
        assert ours == reply[f"ids_{i}"].tolist(), name


def test_layout_landmarks(tokenizer):
    ids = encode_messages(tokenizer, CONVERSATIONS["two reference clips"]).token_ids
    text = tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|><|eom_id|>" in text  # assistant followed by assistant
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>")


def test_scene_description_layout():
    assert system_text(DEFAULT_SCENE) == (
        "Generate audio following instruction.\n\n<|scene_desc_start|>\nAudio is recorded from a quiet room.\n"
        "<|scene_desc_end|>"
    )
    assert system_text(None) == INSTRUCTION


def test_reference_audio_expands_to_its_delayed_frames(tokenizer, tiny_hf):
    cfg = read_config(tiny_hf)
    prompt = encode_messages(tokenizer, CONVERSATIONS["voice cloning"])
    inputs = expand_prompt(prompt, cfg)
    assert len(inputs) == len(prompt.token_ids) - 1 + AUDIO.shape[1] + 9
    assert int(inputs.audio_mask.sum()) == AUDIO.shape[1] + 9
    assert (inputs.audio_codes[inputs.audio_mask][0] == cfg.stream_bos_id).all()


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_text_is_refused(text):
    with pytest.raises(PromptError, match="empty"):
        tts_messages(text)


def test_reference_audio_outside_an_assistant_turn_is_refused(tokenizer):
    with pytest.raises(PromptError, match="assistant turn"):
        encode_messages(tokenizer, [Message("user", AUDIO)])


def test_half_a_voice_cloning_request_is_refused():
    with pytest.raises(PromptError, match="both"):
        tts_messages("Hi.", reference_text="only the transcript")


def test_codes_out_of_range_are_refused(tokenizer, tiny_hf):
    prompt = encode_messages(tokenizer, tts_messages("Hi.", reference_text="ref", reference_codes=AUDIO + 1024))
    with pytest.raises(PromptError, match="0..1023"):
        expand_prompt(prompt, read_config(tiny_hf))
