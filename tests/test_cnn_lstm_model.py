"""The CNN-LSTM network and its pickle-free model directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trade_agent.cnn_lstm.model import CNNLSTM, CNNLSTMSpec
from trade_agent.cnn_lstm.store import load_cnn_lstm, save_cnn_lstm
from trade_agent.errors import IntegrityError

SPEC = CNNLSTMSpec(
    n_features=6, sequence_length=12, conv_filters=[8, 16], kernel_sizes=[3, 3], lstm_hidden=8, attention_heads=2
)


@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
@pytest.mark.parametrize("heads", [0, 2])
def test_shapes(norm: str, heads: int) -> None:
    torch.manual_seed(0)
    model = CNNLSTM(replace(SPEC, norm=norm, attention_heads=heads, lstm_layers=2))
    x = torch.randn(5, 12, 6)
    logits, ret = model(x)
    assert logits.shape == (5, 3) and ret.shape == (5,)
    assert model.encode(x).shape == (5, model.embedding_dim) == (5, 8)


def test_encoding_uses_only_the_window() -> None:
    """Each window is encoded independently (no information between samples of a batch)."""
    torch.manual_seed(0)
    model = CNNLSTM(SPEC).eval()
    x = torch.randn(4, 12, 6)
    together = model.encode(x)
    alone = torch.cat([model.encode(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    x = torch.randn(4, 12, 6)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = CNNLSTM(replace(SPEC, dropout=0.0, gradient_checkpointing=checkpointing)).train()
        logits, ret = model(x)
        (logits.sum() + ret.sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_model_directory_roundtrip_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CNNLSTM(SPEC).eval()
    save_cnn_lstm(tmp_path / "m", model, {"feature_names": list("abcdef")}, {"metrics": {}})
    loaded, config = load_cnn_lstm(tmp_path / "m")
    x = torch.randn(3, 12, 6)
    torch.testing.assert_close(loaded.encode(x), model.encode(x))
    assert config["feature_names"] == list("abcdef") and config["spec"]["lstm_hidden"] == 8
    # The weights file holds tensors only: the safe loader accepts it.
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_mismatched_weights_are_an_integrity_error(tmp_path: Path) -> None:
    save_cnn_lstm(tmp_path / "m", CNNLSTM(SPEC), {}, {})
    other = CNNLSTM(replace(SPEC, lstm_hidden=4, attention_heads=0))
    torch.save(other.state_dict(), tmp_path / "m" / "model.pt")
    with pytest.raises(IntegrityError, match=r"weights do not match config\.json"):
        load_cnn_lstm(tmp_path / "m")
