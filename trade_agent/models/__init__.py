"""Model architectures and their pickle-free on-disk form."""

from trade_agent.models.cnn_lstm import CNNLSTM, CNNLSTMSpec
from trade_agent.models.store import load_cnn_lstm, save_cnn_lstm

__all__ = ["CNNLSTM", "CNNLSTMSpec", "load_cnn_lstm", "save_cnn_lstm"]
