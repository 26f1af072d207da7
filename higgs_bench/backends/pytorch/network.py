"""The Higgs Audio v2 network in plain PyTorch: Llama attention shared by text and audio, dual-FFN routing,
fast-forward layers, the summed codebook embedding and the audio head only.

Attention runs over a preallocated KV cache: a prefill left-pads its prompts to one length, and every decode
step writes one new column for every row, at that row's own column (rows that joined at different times sit
at different columns). Cache columns are given as tensors, so a decode step has the same shapes every time
and can be captured in a CUDA graph.

Each layer's q/k/v projections are one weight (`qkv_proj`), and so are each MLP's gate and up projections
(`gate_up_proj`), as in TensorRT-LLM's Llama and gpt-fast: fewer, larger matrix products, which read the
weights closer to memory bandwidth at small batches. `fuse_weights` makes them from the canonical names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from higgs_bench.model.config import DUAL, SKIP, HiggsConfig
from higgs_bench.model.weights import AUDIO_NORMS, TEXT_NORMS


def rope_inv_freq(cfg: HiggsConfig) -> torch.Tensor:
    """Inverse RoPE frequencies, with the checkpoint's scaling (default, linear or llama3)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type", "default")
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind != "llama3":
        return inv_freq
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_between = (wavelen >= original / high) & (wavelen <= original / low)
    return torch.where(in_between, blended, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


# Fused linear -> the canonical linears it holds, stacked along the output rows in this order.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
FUSED_BY_PART = {part: fused for fused, parts in FUSED.items() for part in parts}


def fuse_weights(weights: dict[str, torch.Tensor], in_place: bool = False) -> dict[str, torch.Tensor]:
    """Canonical weights -> the network's: each FUSED group concatenated along the output rows (names already
    fused pass through). in_place: the parts leave `weights` as they are fused, so that a loader that owns
    them holds one group twice at a time, not every group (6.5 GB more at the 3B shape)."""
    out = weights if in_place else dict(weights)
    for fused, parts in FUSED.items():
        first = f".{parts[0]}.weight"
        for module in [name.removesuffix(first) for name in out if name.endswith(first)]:
            out[f"{module}.{fused}.weight"] = torch.cat([out.pop(f"{module}.{part}.weight") for part in parts])
    return out


def network_linear(canonical: str) -> str:
    """The network's module name for a canonical linear (layers.0.self_attn.k_proj -> ...qkv_proj)."""
    module, leaf = canonical.rsplit(".", 1)
    return f"{module}.{FUSED_BY_PART.get(leaf, leaf)}"


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Attention(nn.Module):
    def __init__(self, cfg: HiggsConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.sizes = (q, kv, kv)
        self.qkv_proj = nn.Linear(cfg.hidden_size, q + 2 * kv, bias=False)
        self.o_proj = nn.Linear(q, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, cache: tuple[torch.Tensor, torch.Tensor], columns: torch.Tensor, mask):
        """Write this block's keys/values at cache `columns` ([S]: the same columns for every row; [B, 1]: one
        position per row, each at its own column), then attend over the first mask.shape[-1] columns."""
        b, s, _ = x.shape
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)
        q = q.view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        cache_k, cache_v = cache
        if columns.dim() == 1:
            cache_k.index_copy_(2, columns, k)
            cache_v.index_copy_(2, columns, v)
        else:
            rows = torch.arange(b, device=k.device)
            cache_k[rows, :, columns[:, 0]] = k[:, :, 0]
            cache_v[rows, :, columns[:, 0]] = v[:, :, 0]
        width = mask.shape[-1]
        out = F.scaled_dot_product_attention(q, cache_k[:, :, :width], cache_v[:, :, :width], mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


@dataclass
class Rows:
    """Mixed audio and text positions: the [B, S] audio mask and the flat row indices of each kind."""

    mask: torch.Tensor
    audio: torch.Tensor
    text: torch.Tensor

    @classmethod
    def of(cls, mask: torch.Tensor) -> Rows | bool:
        """The rows of each kind, or False where no position is audio: every layer then runs its text MLP alone,
        rather than its audio MLP on no rows (whose products are still launched, and on a GPU compiled)."""
        flat = mask.reshape(-1)
        audio = flat.nonzero().squeeze(1)
        if audio.numel() == 0:
            return False
        return cls(mask, audio, (~flat).nonzero().squeeze(1))

    @classmethod
    def selected(cls, mask: torch.Tensor) -> Rows:
        """Both MLPs on every position, each position keeping its own: fixed shapes, no host synchronisation
        (for a captured prefill), at the cost of the other MLP's work."""
        return cls(mask, None, None)


class Layer(nn.Module):
    """One decoder layer. `audio` marks audio positions: Rows, True when every position is audio, or False."""

    def __init__(self, cfg: HiggsConfig, kind: str):
        super().__init__()
        self.kind = kind
        self.self_attn = Attention(cfg)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size)
        for norm in TEXT_NORMS + (AUDIO_NORMS if kind == DUAL else ()):
            setattr(self, norm, RMSNorm(cfg.hidden_size, cfg.rms_norm_eps))
        if kind == DUAL:
            self.audio_mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h, audio, cos, sin, cache, columns, mask, text_only_mask):
        if self.kind == SKIP and audio is True:
            return h  # fast-forward: an all-audio step skips the layer (its cache slots stay masked for text)
        attn_mask = text_only_mask if self.kind == SKIP else mask
        x = self._route(h, audio, self.input_layernorm, getattr(self, "audio_input_layernorm", None))
        out = h + self.self_attn(x, cos, sin, cache, columns, attn_mask)
        out = out + self._ffn(out, audio)
        if self.kind == SKIP and audio is not False:
            out = torch.where(audio.mask[..., None], h, out)  # audio positions pass through unchanged
        return out

    def _ffn(self, h, audio):
        if self.kind != DUAL or audio is False:
            return self.mlp(self.post_attention_layernorm(h))
        if audio is True:
            return self.audio_mlp(self.audio_post_attention_layernorm(h))
        if audio.audio is None:
            return torch.where(audio.mask[..., None], self.audio_mlp(self.audio_post_attention_layernorm(h)),
                               self.mlp(self.post_attention_layernorm(h)))
        # mixed positions: each MLP on its own rows, by row indices found once per forward (Rows), so that
        # no layer waits for the host as boolean-mask indexing would
        flat = h.reshape(-1, h.shape[-1])
        out = torch.empty_like(flat)
        out.index_copy_(0, audio.audio, self.audio_mlp(self.audio_post_attention_layernorm(flat[audio.audio])))
        out.index_copy_(0, audio.text, self.mlp(self.post_attention_layernorm(flat[audio.text])))
        return out.view_as(h)

    def _route(self, h, audio, text_norm, audio_norm):
        if audio_norm is None or audio is False:
            return text_norm(h)
        if audio is True:
            return audio_norm(h)
        return torch.where(audio.mask[..., None], audio_norm(h), text_norm(h))


def call_layer(layer: Layer, *args) -> torch.Tensor:
    return layer(*args)


def call_prefill_layer(layer: Layer, *args) -> torch.Tensor:
    """call_layer under a name of its own: the prefill compiles with other options than the decode step, and
    torch.compile keeps its compilations per function."""
    return layer(*args)


def place_constants(network: HiggsNetwork, cfg: HiggsConfig, device: torch.device) -> HiggsNetwork:
    """The network's constants made again on `device` (one built on the meta device has none): the codebook
    offsets, and the RoPE frequencies in float32 whatever the network's dtype."""
    network.codebook_offsets = (torch.arange(cfg.num_codebooks) * cfg.audio_vocab_size).to(device)
    network.inv_freq = rope_inv_freq(cfg).to(device)
    return network


class HiggsNetwork(nn.Module):
    def __init__(self, cfg: HiggsConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.audio_codebook_embeddings = nn.Embedding(cfg.num_codebooks * cfg.audio_vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Layer(cfg, kind) for kind in cfg.layer_kinds)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.audio_lm_head = nn.Linear(cfg.hidden_size, cfg.num_codebooks * cfg.audio_vocab_size, bias=False)
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.register_buffer(
            "codebook_offsets", torch.arange(cfg.num_codebooks) * cfg.audio_vocab_size, persistent=False
        )

    def embed_audio(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., N] codes -> [..., H]: the sum of the N codebook embeddings."""
        return self.audio_codebook_embeddings(codes + self.codebook_offsets).sum(dim=-2)

    def embed(self, token_ids, audio_codes, audio_mask) -> torch.Tensor:
        return torch.where(audio_mask[..., None], self.embed_audio(audio_codes), self.embed_tokens(token_ids))

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, S, head_dim]
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def forward(self, h, audio, positions, caches, columns, mask, text_only_mask, run_layer=None) -> torch.Tensor:
        """Hidden states [B, S, H] written at cache `columns` ([S], or [B, 1] for one position per row) -> final
        normed hidden states.
        audio: True (every position is audio), False (none), a [B, S] mask or Rows. run_layer: how each layer is
        called (call_layer, or a compiled call_layer that all layers share)."""
        if isinstance(audio, torch.Tensor):
            audio = Rows.of(audio)
        run_layer = run_layer or call_layer
        cos, sin = self.rope(positions, h.dtype)
        for layer, cache in zip(self.layers, caches):
            h = run_layer(layer, h, audio, cos, sin, cache, columns, mask, text_only_mask)
        return self.norm(h)

    def audio_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> float32 [B, N, C]."""
        logits = self.audio_lm_head(hidden).float()
        return logits.view(hidden.shape[0], self.cfg.num_codebooks, self.cfg.audio_vocab_size)
