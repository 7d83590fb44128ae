"""A checkpoint the training thread waits for is written from the live tensors, not a host copy: the files
hold the same values, and weights that share memory (tied embeddings) still save as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bert_eval.core.training.checkpoint_writer import _host_weights


def _tied_model() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight  # tied, as a language-model head is to its embeddings
    return model


def test_without_a_copy_the_weights_are_the_live_tensors_and_tied_ones_still_save(tmp_path: Path) -> None:
    model = _tied_model()
    weights = _host_weights(model.state_dict(), copy=False)
    assert weights["0.weight"].data_ptr() == model[0].weight.data_ptr()  # referenced, not copied
    assert weights["1.weight"].data_ptr() != weights["0.weight"].data_ptr()  # the tied one is copied
    save_file(weights, str(tmp_path / "model.safetensors"))
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(saved[name], tensor) for name, tensor in model.state_dict().items())


def test_with_a_copy_no_weight_shares_memory_with_the_model() -> None:
    model = _tied_model()
    weights = _host_weights(model.state_dict(), copy=True)
    live = {p.data_ptr() for p in model.parameters()}
    assert not {w.data_ptr() for w in weights.values()} & live
    assert torch.equal(weights["1.weight"], model[1].weight)
