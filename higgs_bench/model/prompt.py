"""The official chat layout (Boson's `prepare_chatml_sample` + serve_engine's assistant opener), as token ids.

Each piece is encoded on its own with no added special tokens, exactly as the official builder does, so
the ids match it byte for byte; merging pieces before encoding can change BPE merges at the seams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tokenizers import Tokenizer

from higgs_bench.errors import PromptError

INSTRUCTION = "Generate audio following instruction."
DEFAULT_SCENE = "Audio is recorded from a quiet room."
ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    role: str
    content: str | np.ndarray  # text, or audio codes [num_codebooks, frames] (assistant turns only)


@dataclass
class Prompt:
    """Token ids with one `<|AUDIO_OUT|>` per audio segment, and those segments' codes in order."""

    token_ids: list[int]
    audio: list[np.ndarray] = field(default_factory=list)


def system_text(scene: str | None = DEFAULT_SCENE, speakers: tuple[str, ...] = ()) -> str:
    """Boson's system message: the instruction, then an optional scene description and speaker lines."""
    lines = [scene] if scene else []
    if speakers:
        lines.append("\n".join(f"SPEAKER{i}: {desc}" for i, desc in enumerate(speakers)))
    if not lines:
        return INSTRUCTION
    return f"{INSTRUCTION}\n\n<|scene_desc_start|>\n" + "\n\n".join(lines) + "\n<|scene_desc_end|>"


def tts_messages(
    text: str,
    scene: str | None = DEFAULT_SCENE,
    reference_text: str | None = None,
    reference_codes: np.ndarray | None = None,
) -> list[Message]:
    """A speech request; with a reference, the voice-cloning layout (transcript turn, then its audio)."""
    check_text(text)
    messages = [Message("system", system_text(scene))]
    if (reference_text is None) != (reference_codes is None):
        raise PromptError("voice cloning needs both the reference transcript and the reference audio")
    if reference_codes is not None:
        check_text(reference_text, what="reference transcript")
        messages += [Message("user", reference_text), Message("assistant", reference_codes)]
    messages.append(Message("user", text))
    return messages


def check_text(text: str | None, what: str = "text") -> None:
    if text is None or not text.strip():
        raise PromptError(f"the {what} is empty; give the words to speak")


def encode_messages(tokenizer: Tokenizer, messages: list[Message], num_codebooks: int = 8) -> Prompt:
    """Token ids of a conversation followed by the assistant header and `<|audio_out_bos|>`."""
    ids: list[int] = []
    audio: list[np.ndarray] = []

    def encode(piece: str) -> None:
        ids.extend(tokenizer.encode(piece, add_special_tokens=False).ids)

    for turn, message in enumerate(messages):
        if message.role not in ROLES:
            raise PromptError(f"message {turn}: role {message.role!r} is not one of {ROLES}")
        opener = "<|begin_of_text|>" if turn == 0 else ""
        encode(f"{opener}<|start_header_id|>{message.role}<|end_header_id|>\n\n")
        if isinstance(message.content, str):
            encode(message.content)
        else:
            audio.append(_checked_codes(message, turn, num_codebooks))
            encode("<|audio_out_bos|><|AUDIO_OUT|><|audio_eos|>")
        next_is_assistant = turn + 1 < len(messages) and messages[turn + 1].role == "assistant"
        encode("<|eom_id|>" if message.role == "assistant" and next_is_assistant else "<|eot_id|>")
    encode("<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>")
    return Prompt(ids, audio)


def _checked_codes(message: Message, turn: int, num_codebooks: int) -> np.ndarray:
    if message.role != "assistant":
        # serve_engine silently drops audio in user/system turns; refuse instead of losing the voice.
        raise PromptError(f"message {turn}: reference audio belongs in an assistant turn, not {message.role!r}")
    codes = np.asarray(message.content)
    if codes.ndim != 2 or codes.shape[0] != num_codebooks or codes.shape[1] == 0:
        raise PromptError(f"message {turn}: audio codes must have shape [{num_codebooks}, frames>0], got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise PromptError(f"message {turn}: audio codes must be integers, got {codes.dtype}")
    return codes.astype(np.int64)
