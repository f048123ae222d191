"""nmt: train and compare RNN, RNN+attention and Transformer translation models."""
__version__ = "0.1.0"
