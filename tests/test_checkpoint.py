"""Loading checkpoints of both layouts, and the errors a user sees for broken ones."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from higgs_bench.errors import CheckpointError
from higgs_bench.model.checkpoint import load_checkpoint
from higgs_bench.model.config import DUAL, SKIP, TEXT, read_config


def test_both_layouts_give_the_same_config_and_weights(tiny_hf, tiny_boson):
    hf, boson = load_checkpoint(tiny_hf), load_checkpoint(tiny_boson)
    assert hf.config == boson.config  # `layout` is not compared
    assert hf.weights.keys() == boson.weights.keys()
    assert all(torch.equal(hf.weights[k], boson.weights[k]) for k in hf.weights)


def test_config_values_come_from_the_checkpoint(tiny_hf, tmp_path):
    cfg = read_config(tiny_hf)
    assert (cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (64, 3, 4, 2, 16)
    assert cfg.rope_scaling["original_max_position_embeddings"] == 64 and cfg.rope_theta == 10000.0
    assert cfg.audio_vocab_size == 1026 and cfg.layer_kinds == (DUAL,) * 3
    raw = json.loads((tiny_hf / "config.json").read_text())
    raw["rope_parameters"]["factor"] = 4.0
    raw["num_hidden_layers"] = 5
    (tmp_path / "config.json").write_text(json.dumps(raw))
    changed = read_config(tmp_path)
    assert changed.rope_scaling["factor"] == 4.0 and changed.num_layers == 5


def test_boson_adapter_lists_decide_each_layers_kind(tiny_fast_forward, tmp_path):
    assert read_config(tiny_fast_forward).layer_kinds == (DUAL, SKIP, DUAL)
    raw = json.loads((tiny_fast_forward / "config.json").read_text())
    raw["audio_adapter_type"] = "dual_ffn"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert read_config(tmp_path).layer_kinds == (DUAL, TEXT, DUAL)


def test_fast_forward_layers_have_no_audio_weights(tiny_fast_forward):
    weights = load_checkpoint(tiny_fast_forward).weights
    assert "layers.1.audio_mlp.up_proj.weight" not in weights and "layers.0.audio_mlp.up_proj.weight" in weights


def test_sharded_checkpoints_load(tiny_hf, tmp_path):
    shutil.copy(tiny_hf / "config.json", tmp_path)
    tensors = load_file(tiny_hf / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, tmp_path / file)
    index = {"weight_map": {k: f for f, keys in shards.items() for k in keys}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded.weights["norm.weight"], load_checkpoint(tiny_hf).weights["norm.weight"])


def copy_of(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)


def test_unknown_layout(tiny_hf, tmp_path):
    ckpt = copy_of(tiny_hf, tmp_path / "c")
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_checkpoint(ckpt)


def test_missing_weight_file(tiny_hf, tmp_path):
    ckpt = copy_of(tiny_hf, tmp_path / "c")
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_checkpoint(ckpt)


def test_missing_shard(tiny_hf, tmp_path):
    ckpt = copy_of(tiny_hf, tmp_path / "c")
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"norm.weight": "gone.safetensors"}}))
    with pytest.raises(CheckpointError, match="missing.*gone.safetensors"):
        load_checkpoint(ckpt)


def test_corrupt_weight_file(tiny_hf, tmp_path):
    ckpt = copy_of(tiny_hf, tmp_path / "c")
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)


def test_tensor_whose_shape_disagrees_with_the_config(tiny_hf, tmp_path):
    ckpt = copy_of(tiny_hf, tmp_path / "c")
    raw = json.loads((ckpt / "config.json").read_text())
    raw["intermediate_size"] = 96
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"mlp\.\w+_proj\.weight has shape \[\d+, \d+\] but the config implies"):
        load_checkpoint(ckpt)


def test_missing_tensor(tiny_hf, tmp_path):
    ckpt = copy_of(tiny_hf, tmp_path / "c")
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["model.layers.2.audio_mlp.down_proj.weight"]
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="1 tensors missing.*layers.2.audio_mlp.down_proj"):
        load_checkpoint(ckpt)


def test_unsupported_boson_options_are_named(tiny_boson, tmp_path):
    ckpt = copy_of(tiny_boson, tmp_path / "c")
    raw = json.loads((ckpt / "config.json").read_text())
    raw["use_audio_out_self_attention"] = True
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="use_audio_out_self_attention"):
        load_checkpoint(ckpt)
