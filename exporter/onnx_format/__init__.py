"""The ONNX format: tf2onnx conversion of the frozen graph, the rewrites done before it, the
string-table ops, and external data for models over 2 GiB.

Named `onnx_format`, not `onnx`, so `exporter.onnx…` never reads as the `onnx` package.
"""
