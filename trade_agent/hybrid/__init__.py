"""Stage 3: the CNN-LSTM encoder inside an RL policy, fine-tuned end to end (the `hybrid` stage)."""
