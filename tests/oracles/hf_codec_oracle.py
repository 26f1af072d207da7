"""Runs inside the transformers>=5 venv: the port's HiggsAudioV2TokenizerModel on our requests.

Request: {"codec_dir": a codec in the port's layout, "codes": [[...] x N] (decode),
          "wave": [...] at 24 kHz (encode), "wave_16k": [...] (optional: hand HuBERT this audio instead of
          torchaudio's resampling, to compare everything after the resampler)}.
Reply: "wave" (decoded), "codes" (encoded), "unexpected" (tensors of ours the port does not name) and
"missing_used" (tensors the port uses for encoding or decoding that our file lacks).
"""

import json
import sys

import numpy as np
import torch
from transformers import HiggsAudioV2TokenizerModel
from transformers.models.higgs_audio_v2_tokenizer import modeling_higgs_audio_v2_tokenizer as port


def main(request_path, reply_path):
    request = json.loads(open(request_path).read())
    model, info = HiggsAudioV2TokenizerModel.from_pretrained(request["codec_dir"], output_loading_info=True)
    model.eval()
    training_only = ("decoder_semantic.", "fc1.", "codebook.inited", "codebook.cluster_size", "codebook.embed_avg")
    reply = {"unexpected": np.array(sorted(info["unexpected_keys"])),
             "missing_used": np.array(sorted(k for k in info["missing_keys"] if not any(p in k for p in training_only)))}
    with torch.no_grad():
        if "codes" in request:
            codes = torch.tensor(request["codes"])[None]
            reply["wave"] = model.decode(codes, return_dict=False)[0, 0].numpy()
        if "wave" in request:
            if "wave_16k" in request:
                given = torch.tensor(request["wave_16k"], dtype=torch.float32)[None, None]
                port.torchaudio.functional.resample = lambda x, orig, new: given
            wave = torch.tensor(request["wave"], dtype=torch.float32)[None, None]
            reply["codes"] = model.encode(wave, return_dict=False)[0].numpy()
    np.savez(reply_path, **reply)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
