"""A quantised engine's weights, kept in its folder as the build quantised them: a start reads them instead of
the checkpoint and does not quantise again. At the 3B shape they are 3.5 GB (int4) or 5.8 GB (int8, fp8) against
the checkpoint's 10.7 GB in bf16; on an H200 int4's start loaded its weights in 0.62 s from them, 1.00 s from the
checkpoint (docs/performance.md).

Their damage shows as they load: each tensor's words are summed where it landed (a GPU sums gigabytes in
milliseconds, where a digest of the file would take seconds at every start), and the sums are checked against
build.json's; the build record checks only that the file is there at its size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from higgs_bench.backends.pytorch.network import HiggsNetwork, place_constants
from higgs_bench.backends.pytorch.quantize import kept_quantised_linears
from higgs_bench.errors import DamagedArtefact
from higgs_bench.files import atomic_path
from higgs_bench.model.checkpoint import PinnedStaging
from higgs_bench.model.config import HiggsConfig

WEIGHTS_FILE = "weights.safetensors"


def save_weights(folder: Path, network: HiggsNetwork) -> dict:
    """Write the network's tensors (quantised linears and 16-bit weights) into `folder`; their record."""
    tensors = network.state_dict()
    with atomic_path(folder / WEIGHTS_FILE) as temp:
        save_file(tensors, temp)
    return {"file": WEIGHTS_FILE, "bytes": (folder / WEIGHTS_FILE).stat().st_size, "checksum": checksum(tensors)}


def read_weights(folder: Path, record: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """The tensors save_weights kept, on `device`; DamagedArtefact when they are not what it wrote."""
    path = folder / record["file"]
    staging = PinnedStaging(device) if device.type == "cuda" else None
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            tensors = {name: staging.to_device(f.get_tensor(name)) if staging else f.get_tensor(name)
                       for name in f.keys()}
    except (SafetensorError, OSError) as err:
        raise DamagedArtefact(f"{record['file']} is unreadable ({err})") from err
    if checksum(tensors) != record["checksum"]:
        raise DamagedArtefact(f"{record['file']} is damaged (its tensors' sums differ from build.json's)")
    return tensors


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """A digest of each tensor's name, dtype, shape and the sum of its 32-bit words (bytes where they do not
    divide into words), summed where the tensors are."""
    named = sorted(tensors.items())
    sums = torch.stack([_words(tensor).sum(dtype=torch.int64) for _, tensor in named]).tolist()
    digest = hashlib.sha256()
    for (name, tensor), total in zip(named, sums):
        digest.update(f"{name} {tensor.dtype} {list(tensor.shape)} {total}\n".encode())
    return digest.hexdigest()


def _words(tensor: torch.Tensor) -> torch.Tensor:
    data = tensor.reshape(-1).view(torch.uint8)
    return data.view(torch.int32) if data.numel() % 4 == 0 else data


def kept_network(config: HiggsConfig, tensors: dict[str, torch.Tensor], device: torch.device,
                 quantised: str) -> HiggsNetwork:
    """The network of an engine's kept weights, on their device and in their dtypes."""
    with torch.device("meta"):
        network = HiggsNetwork(config)
    kept_quantised_linears(network, config, quantised, device, tensors)
    network.load_state_dict(tensors, strict=True, assign=True)
    return place_constants(network, config, device)
