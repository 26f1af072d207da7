"""Canonical weight names, their shapes, and the mapping from each checkpoint layout.

Canonical names follow Boson's release (the model's original names), with the audio head lifted out of
`audio_decoder_proj` and the text head dropped: speech generation never needs it. Every backend and the
TensorRT-LLM converter read this one table.
"""

from __future__ import annotations

from higgs_bench.model.config import DUAL, HiggsConfig

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TEXT_NORMS = ("input_layernorm", "post_attention_layernorm")
AUDIO_NORMS = ("audio_input_layernorm", "audio_post_attention_layernorm")

# Tensors a layout may carry that generation does not use.
IGNORED = {
    "boson": ("audio_decoder_proj.text_lm_head.weight",),
    "hf": ("text_lm_head.weight",),
}


def expected_shapes(cfg: HiggsConfig) -> dict[str, tuple[int, ...]]:
    h, kv = cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim
    q = cfg.num_heads * cfg.head_dim
    audio_rows = cfg.num_codebooks * cfg.audio_vocab_size
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (cfg.vocab_size, h)}
    for i, kind in enumerate(cfg.layer_kinds):
        p = f"layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
        }
        mlps = ("mlp", "audio_mlp") if kind == DUAL else ("mlp",)
        norms = TEXT_NORMS + AUDIO_NORMS if kind == DUAL else TEXT_NORMS
        for mlp in mlps:
            shapes |= {
                p + f"{mlp}.gate_proj.weight": (cfg.intermediate_size, h),
                p + f"{mlp}.up_proj.weight": (cfg.intermediate_size, h),
                p + f"{mlp}.down_proj.weight": (h, cfg.intermediate_size),
            }
        shapes |= {p + f"{norm}.weight": (h,) for norm in norms}
    shapes |= {
        "norm.weight": (h,),
        "audio_codebook_embeddings.weight": (audio_rows, h),
        "audio_lm_head.weight": (audio_rows, h),
    }
    return shapes


def canonical_name(stored: str, layout: str) -> str | None:
    """The canonical name of a stored tensor, or None if generation does not use it."""
    if stored in IGNORED[layout]:
        return None
    if layout == "boson":
        return stored.replace("audio_decoder_proj.", "", 1) if stored.startswith("audio_decoder_proj.") else stored
    if stored == "model.embed_audio_tokens.embed_audio_tokens.weight":
        return "audio_codebook_embeddings.weight"
    return stored.removeprefix("model.")


def stored_name(canonical: str, layout: str) -> str:
    """The inverse of canonical_name, for writing checkpoints."""
    if layout == "boson":
        return "audio_decoder_proj.audio_lm_head.weight" if canonical == "audio_lm_head.weight" else canonical
    if canonical == "audio_codebook_embeddings.weight":
        return "model.embed_audio_tokens.embed_audio_tokens.weight"
    if canonical == "audio_lm_head.weight":
        return canonical
    return "model." + canonical


# Quantised variants (torch and TensorRT-LLM alike) quantise these linears and nothing else: embeddings, norms
# and the audio head stay in 16 bits, where their few bytes buy accuracy.
QUANTISED_MODULES = {"self_attn": ATTENTION, "mlp": MLP, "audio_mlp": MLP}


def quantised_linears(cfg: HiggsConfig) -> list[str]:
    """Canonical module names (no `.weight`) of the linears a quantised variant quantises."""
    shapes = expected_shapes(cfg)
    return [f"layers.{i}.{block}.{leaf}" for i in range(cfg.num_layers) for block, leaves in QUANTISED_MODULES.items()
            for leaf in leaves if f"layers.{i}.{block}.{leaf}.weight" in shapes]
