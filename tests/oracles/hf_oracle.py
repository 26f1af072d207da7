"""Runs inside the transformers>=5 venv: the official port's generate() and forward() on our requests.

Request: {"model_dir", "task": "generate"|"forward", "prompts": [{"token_ids", "audio": [[N x T] ...]}],
          "max_frames": [...], "frames": [[[N] x K] per row] (forward only)},
      or {"task": "warp", "scores": [[C] ...], "temperature", "top_k", "top_p"} -> kept, scores.
Prompt token ids hold one <|AUDIO_OUT|> per audio segment, as Boson's builder writes them; this script
expands them the way HiggsAudioV2Processor does (its own delay pattern and placeholder tokens).
"""

import json
import sys
from types import SimpleNamespace

import numpy as np
import torch
from transformers import HiggsAudioV2ForConditionalGeneration
from transformers.models.higgs_audio_v2.processing_higgs_audio_v2 import HiggsAudioV2Processor


def expand(prompt, cfg):
    """(token ids, audio frames [T, N]) in the processor's layout."""
    proc = SimpleNamespace(audio_stream_bos_id=cfg.audio_stream_bos_id, audio_stream_eos_id=cfg.audio_stream_eos_id)
    n = cfg.num_codebooks
    ids, frames, segments = [], [], iter(prompt["audio"])
    for token in prompt["token_ids"]:
        if token != cfg.audio_token_id:
            ids.append(token)
            continue
        codes = torch.tensor(next(segments))[None]
        bos = codes.new_full((1, n, 1), cfg.audio_stream_bos_id)
        eos = codes.new_full((1, n, 1), cfg.audio_stream_eos_id)
        delayed = HiggsAudioV2Processor.build_delay_pattern(proc, torch.cat([bos, codes, eos], dim=2))[0].T
        ids += [cfg.audio_token_id] * (len(delayed) - (n - 1)) + [cfg.audio_delay_token_id] * (n - 1)
        frames.append(delayed)
    audio = torch.cat(frames) if frames else torch.zeros((0, n), dtype=torch.long)
    return ids, audio


def batch(rows, cfg):
    """Left-padded text, right-padded audio (EOS) with a validity mask, as the processor pads them."""
    width = max(len(ids) for ids, _ in rows)
    frames = max(len(audio) for _, audio in rows)
    input_ids = torch.full((len(rows), width), cfg.pad_token_id)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    audio_ids = torch.full((len(rows), frames, cfg.num_codebooks), cfg.audio_stream_eos_id)
    audio_mask = torch.zeros((len(rows), frames), dtype=torch.bool)
    for i, (ids, audio) in enumerate(rows):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        attention[i, width - len(ids):] = 1
        audio_ids[i, : len(audio)] = audio
        audio_mask[i, : len(audio)] = True
    inputs = {"input_ids": input_ids, "attention_mask": attention}
    if frames:
        inputs |= {"audio_input_ids": audio_ids, "audio_input_ids_mask": audio_mask}
    return inputs, frames


def port_codes(streams, cfg):
    """The port's own HiggsAudioV2Processor.batch_decode on the streams, with a codec that hands the codes back
    unchanged: the codes [N, T] it would decode for each row."""
    codec = SimpleNamespace(decode=lambda codes: SimpleNamespace(audio_values=codes))
    proc = SimpleNamespace(audio_stream_bos_id=cfg.audio_stream_bos_id, audio_stream_eos_id=cfg.audio_stream_eos_id,
                           audio_tokenizer=codec)
    proc.revert_delay_pattern = lambda ids: HiggsAudioV2Processor.revert_delay_pattern(proc, ids)
    return HiggsAudioV2Processor.batch_decode(proc, streams)


def generate(model, req, reply):
    """One greedy batch per entry of req["max_frames"]: streams_<j>, codes_<j>_<row>."""
    cfg = model.config
    inputs, prompt_frames = batch([expand(p, cfg) for p in req["prompts"]], cfg)
    for j, max_frames in enumerate(req["max_frames"]):
        out = model.generate(**inputs, do_sample=False, max_new_tokens=max_frames,
                             pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id)
        streams = out[:, prompt_frames:]
        reply[f"streams_{j}"] = streams.numpy()
        for i, codes in enumerate(port_codes(streams, cfg)):
            reply[f"codes_{j}_{i}"] = codes.numpy()


def forward(model, req, reply):
    """Teacher forcing: each prompt followed by its given frames, one full forward; audio logits at the
    prompt's last position and at every fed frame but the last (those predict the fed frames' successors)."""
    cfg = model.config
    rows = []
    for prompt, frames in zip(req["prompts"], req["frames"]):
        ids, audio = expand(prompt, cfg)
        frames = torch.tensor(frames)
        rows.append((ids + [cfg.audio_token_id] * len(frames), torch.cat([audio, frames])))
    inputs, _ = batch(rows, cfg)
    inputs["position_ids"] = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(**inputs).logits
    k = len(req["frames"][0])
    picked = logits[:, -k - 1 : -1]
    reply["logits"] = picked.reshape(len(rows), k, cfg.num_codebooks, cfg.codebook_size).float().numpy()


def warp(req, reply):
    """The kept tokens and scores of transformers' temperature, top-k and top-p warpers, in generate()'s order."""
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    warpers = LogitsProcessorList([TemperatureLogitsWarper(req["temperature"])])
    if req["top_k"] is not None:
        warpers.append(TopKLogitsWarper(req["top_k"]))
    if req["top_p"] is not None:
        warpers.append(TopPLogitsWarper(req["top_p"]))
    scores = warpers(None, torch.tensor(req["scores"]))
    reply["kept"] = torch.isfinite(scores).numpy()
    reply["scores"] = scores.numpy()


def main(request_path, reply_path):
    req = json.loads(open(request_path).read())
    if req["task"] == "warp":  # no model needed
        reply = {}
        warp(req, reply)
        np.savez(reply_path, **reply)
        return
    torch.manual_seed(0)
    model = HiggsAudioV2ForConditionalGeneration.from_pretrained(req["model_dir"], dtype=torch.float32).eval()
    model.config._attn_implementation = req.get("attn", "eager")
    reply = {}
    {"generate": generate, "forward": forward}[req["task"]](model, req, reply)
    np.savez(reply_path, **reply)


if __name__ == "__main__":
    main(*sys.argv[1:])
