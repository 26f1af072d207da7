"""One internal description of a Higgs Audio v2 generation model, read from either checkpoint layout.

Two layouts exist in the wild:
- "boson": Boson's release (`bosonai/higgs-audio-v2-generation-3B-base`, read by boson-multimodal's
  `HiggsAudioModel`): a `text_config` holding the Llama backbone plus `audio_*` adapter fields.
- "hf": the transformers port (`HiggsAudioV2ForConditionalGeneration`): one flat config, `codebook_size`
  counting the stream BOS/EOS ids, RoPE under `rope_parameters`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from higgs_bench.errors import CheckpointError

# What each layer does with audio positions.
DUAL = "dual"  # audio positions use their own norms and MLP; attention is shared
TEXT = "text"  # audio positions go through the text weights (Boson's plain "dual_ffn" adapter, unlisted layers)
SKIP = "skip"  # fast-forward: audio positions pass through unchanged and text cannot see them in this layer
LAYER_KINDS = (DUAL, TEXT, SKIP)

ROPE_TYPES = ("default", "linear", "llama3")

FRAME_RATE = 25.0  # audio frames per second: the Higgs Audio v2 tokenizer's, which the model is trained on


@dataclass(frozen=True)
class HiggsConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    layer_kinds: tuple[str, ...]
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 131072
    num_codebooks: int = 8
    codebook_size: int = 1024  # real codes; stream BOS and EOS follow them
    audio_out_bos_token_id: int = 128013
    audio_out_token_id: int = 128016
    audio_delay_token_id: int = 128014
    audio_eos_token_id: int = 128012
    pad_token_id: int = 128001
    layout: str = field(default="hf", compare=False)

    @property
    def stream_bos_id(self) -> int:
        return self.codebook_size

    @property
    def stream_eos_id(self) -> int:
        return self.codebook_size + 1

    @property
    def audio_vocab_size(self) -> int:
        """Logits per codebook: the codes plus stream BOS and EOS."""
        return self.codebook_size + 2

    def __post_init__(self):
        sizes = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                 "vocab_size", "max_position_embeddings", "num_codebooks", "codebook_size")
        wrong = [f"{name}={getattr(self, name)!r}" for name in sizes
                 if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool)
                 or getattr(self, name) < 1]
        if wrong:
            raise CheckpointError(f"invalid model config: sizes must be whole numbers >= 1, got {', '.join(wrong)}")
        problems = []
        if self.num_heads % self.num_kv_heads:
            problems.append(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if len(self.layer_kinds) != self.num_layers:
            problems.append(f"{len(self.layer_kinds)} layer kinds for {self.num_layers} layers")
        if any(kind not in LAYER_KINDS for kind in self.layer_kinds):
            problems.append(f"layer kinds must be among {LAYER_KINDS}, got {self.layer_kinds}")
        rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            problems.append(f"RoPE scaling type {rope_type!r} is not supported (supported: {ROPE_TYPES})")
        if problems:
            raise CheckpointError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


def read_config(model_dir: Path) -> HiggsConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no config.json, so this is not a Higgs Audio checkpoint directory")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(raw).__name__}, not an object of model settings")
    layout = detect_layout(raw, path)
    try:
        return _from_boson(raw) if layout == "boson" else _from_hf(raw)
    except KeyError as err:
        raise CheckpointError(f"{path}: missing field {err} for the {layout!r} layout") from err
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err


def detect_layout(raw: dict, path: Path) -> str:
    if "text_config" in raw and "audio_adapter_type" in raw:
        return "boson"
    if raw.get("model_type") == "higgs_audio_v2":
        return "hf"
    raise CheckpointError(
        f"{path}: unknown checkpoint layout (model_type={raw.get('model_type')!r}); expected Boson's "
        "HiggsAudioModel config (text_config + audio_adapter_type) or transformers' higgs_audio_v2"
    )


def _rope_from_llama_fields(raw: dict) -> tuple[float, dict | None]:
    """RoPE theta and scaling from a Llama config: transformers 4.x fields or 5.x `rope_parameters`."""
    params = raw.get("rope_parameters")
    if params:
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        theta = params.get("rope_theta", raw.get("rope_theta", 10000.0))
    else:
        scaling = dict(raw["rope_scaling"]) if raw.get("rope_scaling") else {}
        theta = raw.get("rope_theta", 10000.0)
    if "type" in scaling and "rope_type" not in scaling:
        scaling["rope_type"] = scaling.pop("type")
    if scaling.get("rope_type", "default") == "default":
        return float(theta), None
    return float(theta), scaling


def _backbone_fields(llama: dict) -> dict:
    heads = llama["num_attention_heads"]
    theta, scaling = _rope_from_llama_fields(llama)
    return dict(
        hidden_size=llama["hidden_size"],
        num_layers=llama["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=llama.get("num_key_value_heads") or heads,
        head_dim=llama.get("head_dim") or llama["hidden_size"] // heads,
        intermediate_size=llama["intermediate_size"],
        vocab_size=llama["vocab_size"],
        rms_norm_eps=llama.get("rms_norm_eps", 1e-5),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=llama.get("max_position_embeddings", 131072),
    )


_BOSON_UNSUPPORTED = {
    "use_audio_out_self_attention": "audio self-attention layers",
    "use_audio_out_embed_projector": "an audio-out embedding projector",
    "audio_decoder_proj_num_layers": "audio decoder projection layers",
    "use_rq_transformer": "an RQ-transformer head",
    "audio_embed_avg": "averaged codebook embeddings",
}


def _from_boson(raw: dict) -> HiggsConfig:
    for key, what in _BOSON_UNSUPPORTED.items():
        if raw.get(key):
            raise CheckpointError(f"config sets {key}={raw[key]!r} ({what}); the released Higgs v2 does not and neither do we")
    if not raw.get("use_delay_pattern", False):
        raise CheckpointError("config has use_delay_pattern=false; only delay-pattern checkpoints are supported")
    adapter = raw["audio_adapter_type"]
    if adapter not in ("dual_ffn", "dual_ffn_fast_forward"):
        raise CheckpointError(f"audio_adapter_type {adapter!r} is not supported (dual_ffn, dual_ffn_fast_forward)")
    backbone = _backbone_fields(raw["text_config"])
    dual_layers = set(raw["audio_dual_ffn_layers"] or [])
    unlisted = SKIP if adapter == "dual_ffn_fast_forward" else TEXT
    kinds = tuple(DUAL if i in dual_layers else unlisted for i in range(backbone["num_layers"]))
    _check_stream_ids(raw["audio_codebook_size"], raw.get("audio_stream_bos_id", 1024), raw.get("audio_stream_eos_id", 1025))
    return HiggsConfig(
        **backbone,
        layer_kinds=kinds,
        num_codebooks=raw["audio_num_codebooks"],
        codebook_size=raw["audio_codebook_size"],
        audio_out_bos_token_id=raw.get("audio_out_bos_token_id", 128013),
        audio_out_token_id=raw.get("audio_out_token_idx", 128016),
        audio_eos_token_id=raw.get("audio_eos_token_id", 128012),
        pad_token_id=raw.get("pad_token_id", 128001),
        layout="boson",
    )


def _from_hf(raw: dict) -> HiggsConfig:
    backbone = _backbone_fields(raw)
    codes = raw["codebook_size"] - 2  # the port counts stream BOS and EOS in codebook_size
    _check_stream_ids(codes, raw.get("audio_stream_bos_id", 1024), raw.get("audio_stream_eos_id", 1025))
    return HiggsConfig(
        **backbone,
        layer_kinds=(DUAL,) * backbone["num_layers"],
        num_codebooks=raw["num_codebooks"],
        codebook_size=codes,
        audio_out_bos_token_id=raw.get("audio_bos_token_id", 128013),
        audio_out_token_id=raw.get("audio_token_id", 128016),
        audio_delay_token_id=raw.get("audio_delay_token_id", 128014),
        pad_token_id=raw.get("pad_token_id") or 128001,
        layout="hf",
    )


def _check_stream_ids(codes: int, bos: int, eos: int) -> None:
    if (bos, eos) != (codes, codes + 1):
        raise CheckpointError(
            f"stream BOS/EOS ids ({bos}, {eos}) must directly follow the {codes} codes ({codes}, {codes + 1})"
        )
