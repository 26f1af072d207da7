"""Runs inside the boson-multimodal 0.1.1 venv: Boson's prompt builder, generate() and forward().

Request: {"model_dir", "task": "prompt"|"generate"|"forward", ...}
- prompt:   "conversations": [[{"role", "text"} | {"role", "audio": true}, ...]] -> ids_<i>
            (prepare_chatml_sample, then the assistant header and <|audio_out_bos|> as serve_engine adds them)
- generate: "prompts": [{"token_ids", "audio"}], "max_frames" -> stream_<i> [N, L], one prompt at a time
            (Boson's generate is batch-1), greedy with RAS off, collated as serve_engine collates.
- forward:  "prompts", "frames" -> logits_<i>: audio logits at the fed frames but the last.
- ras:      "logits" [N, C], "history" [N, W], "window", "max_repeat", "masked" -> tokens [N]: the repeat
            decision of _sample_audio_tokens (see ras()).
- codec_decode: "codec_dir", "codes" [N, T] -> wave: Boson's decode path (its RVQ decode, fc_post2 and its
            vendored DAC decoder), built at the codec's sizes and loaded from its model.pth.
"""

import dataclasses
import json
import sys
import types

import numpy as np
import torch
from transformers import AutoTokenizer

# The collator imports librosa only to resample audio for Whisper features, which the released model
# (encode_whisper_embed=false) never computes; an empty module keeps that heavy extra out, and any call
# into it would fail loudly rather than change results.
sys.modules.setdefault("librosa", types.ModuleType("librosa"))

from boson_multimodal.data_collator.higgs_audio_collator import HiggsAudioSampleCollator
from boson_multimodal.data_types import AudioContent, ChatMLSample, Message
from boson_multimodal.dataset.chatml_dataset import ChatMLDatasetSample, prepare_chatml_sample
from boson_multimodal.model.higgs_audio import HiggsAudioModel

SERVE_POSTFIX = "<|start_header_id|>assistant<|end_header_id|>\n\n<|audio_out_bos|>"


def prompt_ids(req, reply):
    tokenizer = AutoTokenizer.from_pretrained(req["model_dir"])
    for i, conversation in enumerate(req["conversations"]):
        messages = [
            Message(m["role"], AudioContent(audio_url="placeholder") if m.get("audio") else m["text"])
            for m in conversation
        ]
        ids, _, _, _ = prepare_chatml_sample(ChatMLSample(messages=messages), tokenizer)
        reply[f"ids_{i}"] = np.array(ids + tokenizer.encode(SERVE_POSTFIX, add_special_tokens=False))


def collate(model, prompt):
    cfg = model.config
    collator = HiggsAudioSampleCollator(
        whisper_processor=None, encode_whisper_embed=cfg.encode_whisper_embed,
        audio_in_token_id=cfg.audio_in_token_idx, audio_out_token_id=cfg.audio_out_token_idx,
        audio_stream_bos_id=cfg.audio_stream_bos_id, audio_stream_eos_id=cfg.audio_stream_eos_id,
        pad_token_id=cfg.pad_token_id, return_audio_in_tokens=False, use_delay_pattern=cfg.use_delay_pattern,
        audio_num_codebooks=cfg.audio_num_codebooks, round_to=1,
    )
    audio = [torch.tensor(a) for a in prompt["audio"]]
    starts = np.cumsum([0] + [a.shape[1] for a in audio])[:-1]
    sample = ChatMLDatasetSample(
        input_ids=torch.LongTensor(prompt["token_ids"]), label_ids=None,
        audio_ids_concat=torch.cat(audio, dim=1) if audio else None,
        audio_ids_start=torch.tensor(starts, dtype=torch.long) if audio else None,
        audio_waveforms_concat=None, audio_waveforms_start=None, audio_sample_rate=None, audio_speaker_indices=None,
    )
    return dataclasses.asdict(collator([sample]))


def generate(model, req, reply):
    for i, prompt in enumerate(req["prompts"]):
        inputs = collate(model, prompt)
        _, audio = model.generate(**inputs, max_new_tokens=req["max_frames"], use_cache=True, do_sample=False,
                                  ras_win_len=None, seed=0)
        reply[f"stream_{i}"] = audio[0].numpy()


def forward(model, req, reply):
    cfg = model.config
    for i, (prompt, frames) in enumerate(zip(req["prompts"], req["frames"])):
        inputs = collate(model, prompt)
        frames = torch.tensor(frames).T  # [N, K]: one more audio-out segment, already delayed
        has_audio = inputs["audio_out_ids"] is not None and inputs["audio_out_ids"].numel() > 0
        start = inputs["audio_out_ids"].shape[1] if has_audio else 0
        inputs["audio_out_ids"] = torch.cat([inputs["audio_out_ids"], frames], dim=1) if has_audio else frames
        previous = inputs["audio_out_ids_start"] if has_audio else torch.zeros(0, dtype=torch.long)
        inputs["audio_out_ids_start"] = torch.cat([previous, torch.tensor([start])])
        inputs["audio_out_ids_start_group_loc"] = torch.zeros_like(inputs["audio_out_ids_start"])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([[cfg.audio_out_token_idx]])], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones((1, 1), dtype=torch.long)], dim=1)
        with torch.no_grad():
            out = model(**inputs, use_cache=False)
        reply[f"logits_{i}"] = out.audio_logits[-frames.shape[1] : -1].float().numpy()


def codec_decode(req, reply):
    # HiggsAudioTokenizer itself pulls torchaudio, librosa and vector_quantize_pytorch and hard-codes 1024
    # decoder channels, so assemble its decode path from the same classes it uses. audiotools is only used
    # for the DAC training wrapper; Boson's own loader aliases `dac` to its vendored copy.
    audiotools = types.ModuleType("audiotools")
    audiotools.AudioSignal = object
    audiotools.ml = types.ModuleType("audiotools.ml")
    audiotools.ml.BaseModel = torch.nn.Module
    sys.modules.update({"audiotools": audiotools, "audiotools.ml": audiotools.ml})
    import boson_multimodal.audio_processing.descriptaudiocodec.dac as vendored_dac
    import boson_multimodal.audio_processing.descriptaudiocodec.dac.nn.layers  # noqa: F401

    sys.modules.update({"dac": vendored_dac, "dac.nn": vendored_dac.nn, "dac.nn.layers": vendored_dac.nn.layers})
    import boson_multimodal.audio_processing.descriptaudiocodec.dac.nn.quantize  # noqa: F401

    sys.modules["dac.nn.quantize"] = vendored_dac.nn.quantize
    from boson_multimodal.audio_processing.descriptaudiocodec.dac.model import dac as dac2
    from boson_multimodal.audio_processing.quantization.vq import ResidualVectorQuantizer

    cfg = json.loads(open(f"{req['codec_dir']}/config.json").read())
    quantizer_dim = cfg["D"] + cfg["semantic_dim"]
    modules = torch.nn.ModuleDict({
        "quantizer": ResidualVectorQuantizer(dimension=quantizer_dim, codebook_dim=cfg["codebook_dim"],
                                             n_q=cfg["n_q"], bins=cfg["bins"]),
        "fc_post2": torch.nn.Linear(quantizer_dim, cfg["D"]),
        "decoder_2": dac2.Decoder(cfg["D"], cfg["decoder_channels"], cfg["ratios"]),
    })
    state = torch.load(f"{req['codec_dir']}/model.pth", map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k.startswith(("quantizer.", "fc_post2.", "decoder_2."))}
    missing, unexpected = modules.load_state_dict(state, strict=False)
    decode_side = [k for k in missing if not k.endswith(("project_in.weight", "project_in.bias", "inited",
                                                         "cluster_size", "embed_avg"))]
    assert not decode_side and not unexpected, (decode_side, unexpected)
    codes = torch.tensor(req["codes"])[None]  # [1, N, T], as HiggsAudioTokenizer.decode takes it
    with torch.no_grad():
        quantized = modules["quantizer"].decode(codes.permute(1, 0, 2)).transpose(1, 2)
        wave = modules["decoder_2"](modules["fc_post2"](quantized).transpose(1, 2))
    reply["wave"] = wave[0, 0].numpy()


def ras(model, req, reply):
    """Boson's repetition-aware sampling on one frame: `logits` [N, C] and `history` [N, W] of earlier codes.
    The first choice is the argmax with token `masked` excluded; a re-draw comes from the raw logits, where
    `masked` dominates, so the reply shows each codebook's repeat decision without depending on random numbers."""
    from transformers import GenerationConfig
    from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList

    class MaskToken(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores.index_fill(-1, torch.tensor([req["masked"]]), float("-inf"))

    config = GenerationConfig()
    config.generation_kwargs = {"ras_win_len": req["window"], "ras_win_max_num_repeat": req["max_repeat"]}
    logits = torch.tensor(req["logits"])
    out = model._sample_audio_tokens(hidden_states=None, audio_logits=logits[None], audio_out_ids=torch.tensor(req["history"]),
                                     do_sample=False, logits_processor=LogitsProcessorList([MaskToken()]),
                                     device=torch.device("cpu"), torch_generator=torch.Generator().manual_seed(0),
                                     generation_config=config, num_delay=logits.shape[0], num_remaining_delays=None)
    reply["tokens"] = out[1].numpy()


def main(request_path, reply_path):
    req = json.loads(open(request_path).read())
    reply = {}
    if req["task"] == "prompt":
        prompt_ids(req, reply)
    elif req["task"] == "codec_decode":
        codec_decode(req, reply)
    else:
        model = HiggsAudioModel.from_pretrained(req["model_dir"], torch_dtype=torch.float32, attn_implementation="eager").eval()
        {"generate": generate, "forward": forward, "ras": ras}[req["task"]](model, req, reply)
    np.savez(reply_path, **reply)


if __name__ == "__main__":
    main(*sys.argv[1:])
