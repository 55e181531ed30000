"""Stage 1: the CNN-LSTM (model, windows, trainer, the `cnn_lstm` and `embed` stages, distributed launch)."""
