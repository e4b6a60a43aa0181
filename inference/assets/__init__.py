"""The shipped offer-scoring model and its manifest, written by inference/train.py."""
