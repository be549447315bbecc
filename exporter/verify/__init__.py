"""Verification: sample inputs, tolerances, parity Keras vs SavedModel vs ONNX Runtime while
exporting, and against a served model (gRPC and REST) afterwards.
"""
