"""The text tokenizer: the checkpoint's tokenizer.json, read with the `tokenizers` library."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from higgs_bench.errors import CheckpointError

# Higgs renames Llama-3's reserved special tokens 128000..128027; the rest keep Llama-3.1's numbering.
HIGGS_SPECIAL_TOKENS = {
    128000: "<|begin_of_text|>",
    128001: "<|end_of_text|>",
    128004: "<|finetune_right_pad_id|>",
    128006: "<|start_header_id|>",
    128007: "<|end_header_id|>",
    128008: "<|eom_id|>",
    128009: "<|eot_id|>",
    128010: "<|python_tag|>",
    128011: "<|audio_bos|>",
    128012: "<|audio_eos|>",
    128013: "<|audio_out_bos|>",
    128015: "<|AUDIO|>",
    128016: "<|AUDIO_OUT|>",
    128017: "<|recipient|>",
    128018: "<|scene_desc_start|>",
    128019: "<|scene_desc_end|>",
    128020: "<|generation_instruction_start|>",
    128021: "<|generation_instruction_end|>",
    128022: "<SE>",
    128023: "</SE>",
    128024: "<SE_s>",
    128025: "</SE_s>",
    128026: "<SE_e>",
    128027: "</SE_e>",
}


def higgs_special_token(token_id: int) -> str:
    """Name of special token `token_id` (128000..128255) in the Higgs tokenizer."""
    return HIGGS_SPECIAL_TOKENS.get(token_id, f"<|reserved_special_token_{token_id - 128008}|>")


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no tokenizer.json beside the weights")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust side raises plain Exception subclasses
        raise CheckpointError(f"{path}: not a readable tokenizers file ({err})") from err
    for token_id in (128000, 128009, 128013, 128016):
        if tokenizer.token_to_id(HIGGS_SPECIAL_TOKENS[token_id]) != token_id:
            raise CheckpointError(
                f"{path}: {HIGGS_SPECIAL_TOKENS[token_id]} is not token {token_id}; this is not a Higgs tokenizer"
            )
    return tokenizer
