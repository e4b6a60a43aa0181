"""Inference: providers over onnxruntime, the batching buffer, the model registry and rollouts.

The runtime half (providers, batcher, hot swap) imports no Django.
"""
