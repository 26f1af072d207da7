"""Higgs Audio v2 as a TensorRT-LLM network, built from TensorRT-LLM's own layers.

Written against TensorRT-LLM 1.2.x (commit b35ac1b, 1.2.0rc2): tensorrt_llm/models/modeling_utils.py
(DecoderModelForCausalLM, DecoderLayerList, PretrainedConfig), tensorrt_llm/models/llama/model.py (the layer
this one follows), tensorrt_llm/layers/{attention,mlp,normalization,embedding,linear}.py and
tensorrt_llm/functional.py (index_select, nonzero, scatter, expand, where, select). Imported only where
tensorrt_llm is installed (engine.py); the parameters it declares are the names of names.tensor_table.

Packed inputs (remove_input_padding): every tensor runs over `num_tokens` positions of the whole batch.
An extra input `audio_codes` int32 [num_tokens, 8] carries each audio position's 8 codes; text positions
hold -1. Positions come from the attention plugin (each row's cache index), as in TensorRT-LLM's Llama.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from tensorrt_llm._common import default_net
from tensorrt_llm.functional import (Tensor, cast, expand, gather_last_token_logits, index_select,
                                     maximum, nonzero, scatter, select, shape, unsqueeze, view, where)
from tensorrt_llm.layers import (Attention, AttentionMaskType, ColumnLinear, Embedding, GatedMLP,
                                 PositionEmbeddingType, RmsNorm)
from tensorrt_llm.models import MODEL_MAP
from tensorrt_llm.models.modeling_utils import DecoderLayerList, DecoderModelForCausalLM, PretrainedConfig
from tensorrt_llm.module import Module

ARCHITECTURE = "HiggsAudioForCausalLM"
AUDIO_CODES = "audio_codes"
ROUTINGS = ("gather", "select")


@dataclass
class AudioRows:
    """Which packed positions are audio, computed once per step and shared by every layer."""

    is_audio: Tensor  # [num_tokens] bool
    audio: Tensor  # [n_audio] int32 row indices
    text: Tensor  # [n_text] int32 row indices


def rows_where(mask: Tensor) -> Tensor:
    return view(cast(nonzero(mask), "int32"), [-1])  # nonzero gives [1, n] for a 1-D mask


def rms_norm(config) -> RmsNorm:
    return RmsNorm(normalized_shape=config.hidden_size, eps=config.norm_epsilon, dtype=config.dtype)


def gated_mlp(config) -> GatedMLP:
    return GatedMLP(hidden_size=config.hidden_size, ffn_hidden_size=config.intermediate_size, hidden_act="silu",
                    dtype=config.dtype, bias=False, tp_group=config.mapping.tp_group, tp_size=config.mapping.tp_size,
                    quant_mode=config.quant_mode)


def ffn_on_rows(h: Tensor, rows: Tensor, norm, mlp, into: Tensor) -> Tensor:
    """`into` with the listed rows replaced by h + mlp(norm(h)) computed on those rows alone: a GEMM over
    zero rows reads no weights, so a step with no text positions never touches the text MLP."""
    picked = index_select(h, 0, rows)
    updated = picked + mlp(norm(picked))
    return scatter(into, 0, expand(unsqueeze(rows, 1), shape(updated)), updated)


class HiggsDecoderLayer(Module):
    """Llama attention shared by text and audio; dual-FFN layers route audio positions through their own
    norms and MLP. Text layers ("text" kind) run every position through the text weights."""

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.dual = config.audio_layer_kinds[layer_idx] == "dual"
        self.routing = config.audio_routing
        self.input_layernorm, self.post_layernorm = rms_norm(config), rms_norm(config)
        self.attention = Attention(
            local_layer_idx=layer_idx, hidden_size=config.hidden_size, attention_head_size=config.head_size,
            num_attention_heads=config.num_attention_heads, num_kv_heads=config.num_key_value_heads,
            max_position_embeddings=config.max_position_embeddings, dtype=config.dtype,
            attention_mask_type=AttentionMaskType.causal, bias=False,
            position_embedding_type=PositionEmbeddingType.rope_gpt_neox,
            rotary_embedding_base=config.rotary_base, rotary_embedding_scaling=config.rotary_scaling,
            tp_group=config.mapping.tp_group, tp_size=config.mapping.tp_size, tp_rank=config.mapping.tp_rank,
            quant_mode=config.quant_mode)
        self.mlp = gated_mlp(config)
        if self.dual:
            self.audio_input_layernorm, self.audio_post_layernorm = rms_norm(config), rms_norm(config)
            self.audio_mlp = gated_mlp(config)

    def forward(self, hidden_states, use_cache=False, attention_mask=None, kv_cache_params=None,
                attention_params=None, vision_token_mask: AudioRows | None = None):
        rows = vision_token_mask  # DecoderLayerList hands this keyword to every layer
        x = self.input_layernorm(hidden_states)
        if self.dual:  # norms are cheap and read H weights: both, then select
            x = where(unsqueeze(rows.is_audio, 1), self.audio_input_layernorm(hidden_states), x)
        out = self.attention(x, attention_mask=attention_mask, use_cache=use_cache,
                             kv_cache_params=kv_cache_params, attention_params=attention_params)
        out, presents = out if use_cache else (out, None)
        h = hidden_states + out
        h = self._ffn(h, rows)
        return (h, presents) if use_cache else h

    def _ffn(self, h: Tensor, rows: AudioRows) -> Tensor:
        if not self.dual:
            return h + self.mlp(self.post_layernorm(h))
        if self.routing == "select":  # both MLPs on every position (reads both weight sets every step)
            audio = self.audio_mlp(self.audio_post_layernorm(h))
            return h + where(unsqueeze(rows.is_audio, 1), audio, self.mlp(self.post_layernorm(h)))
        h_out = ffn_on_rows(h, rows.audio, self.audio_post_layernorm, self.audio_mlp, h)
        return ffn_on_rows(h, rows.text, self.post_layernorm, self.mlp, h_out)


class HiggsModel(Module):
    def __init__(self, config):
        super().__init__()
        codebooks, width = config.audio_num_codebooks, config.audio_vocab_size
        self.vocab_embedding = Embedding(config.vocab_size, config.hidden_size, dtype=config.dtype)
        self.audio_embedding = Embedding(codebooks * width, config.hidden_size, dtype=config.dtype)
        self.layers = DecoderLayerList(HiggsDecoderLayer, config)
        self.ln_f = rms_norm(config)
        self.codebooks, self.codebook_width = codebooks, width

    def forward(self, input_ids, audio_codes, use_cache, attention_mask, kv_cache_params, attention_params):
        first = select(audio_codes, 1, 0)
        is_audio = first > -1
        rows = AudioRows(is_audio, rows_where(is_audio), rows_where(first < 0))
        codes = maximum(audio_codes, 0)  # text positions look up row 0; `where` drops them
        audio = self.audio_embedding(select(codes, 1, 0))
        for k in range(1, self.codebooks):  # the summed codebook embedding
            audio = audio + self.audio_embedding(select(codes, 1, k) + k * self.codebook_width)
        hidden = where(unsqueeze(is_audio, 1), audio, self.vocab_embedding(input_ids))
        hidden = self.layers.forward(hidden, use_cache=use_cache, attention_mask=attention_mask,
                                     kv_cache_params=kv_cache_params, attention_params=attention_params,
                                     vision_token_mask=rows)
        hidden, presents = hidden if use_cache else (hidden, ())
        return self.ln_f(hidden), presents


class HiggsAudioForCausalLM(DecoderModelForCausalLM):
    """The audio head only: logits [batch, 8 x 1026] at each row's last position."""

    config_class = PretrainedConfig

    def __init__(self, config):
        check_network_config(config)
        head_rows = config.audio_num_codebooks * config.audio_vocab_size
        lm_head = ColumnLinear(config.hidden_size, head_rows, bias=False, dtype=config.dtype,
                               tp_group=config.mapping.tp_group, tp_size=config.mapping.tp_size, gather_output=True)
        super().__init__(config, HiggsModel(config), lm_head)

    def prepare_inputs(self, *args, **kwargs):
        """TensorRT-LLM's inputs plus `audio_codes`, whose `num_tokens` ranges repeat input_ids' per profile
        (the builder rejects one named dimension with two ranges)."""
        inputs = super().prepare_inputs(*args, **kwargs)
        profiles = inputs["input_ids"].profiles
        inputs[AUDIO_CODES] = Tensor(
            name=AUDIO_CODES, dtype="int32", shape=[-1, self.config.audio_num_codebooks],
            dim_range=OrderedDict([
                ("num_tokens", [[p.min[0], p.opt[0], p.max[0]] for p in profiles]),
                ("num_codebooks", [self.config.audio_num_codebooks] * len(profiles)),
            ]))
        return inputs

    def forward(self, input_ids, audio_codes, position_ids=None, use_cache=False, last_token_ids=None,
                attention_mask=None, kv_cache_params=None, attention_params=None):
        attention_params = Attention.fill_attention_params(self, attention_params)
        hidden, presents = self.transformer(input_ids, audio_codes, use_cache, attention_mask, kv_cache_params,
                                            attention_params)
        hidden = gather_last_token_logits(hidden, last_token_ids, default_net().plugin_config.remove_input_padding)
        logits = self.lm_head(hidden)
        logits.mark_output("logits", self.config.logits_dtype)
        if use_cache and not default_net().plugin_config.paged_kv_cache:
            for i, present in enumerate(presents):
                present.mark_output(f"present_key_value_{i}", self.config.kv_dtype)
        return logits


def check_network_config(config) -> None:
    """What this network cannot express, refused before any graph is built."""
    if "skip" in config.audio_layer_kinds:
        raise ValueError("fast-forward layers are not supported by the TensorRT-LLM network (docs/trtllm.md)")
    if config.audio_routing not in ROUTINGS:
        raise ValueError(f"audio_routing={config.audio_routing!r}; choose one of {ROUTINGS}")
    if config.mapping.pp_size != 1 or config.mapping.cp_size != 1:
        raise ValueError("pipeline and context parallelism are not supported; use tensor parallelism")


MODEL_MAP[ARCHITECTURE] = HiggsAudioForCausalLM  # PretrainedConfig.from_dict and the engine loaders look here
