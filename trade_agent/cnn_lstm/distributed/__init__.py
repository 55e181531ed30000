"""Multi-process CNN-LSTM training: DeepSpeed / torchrun launch, workers, engines, process groups."""
