"""An embedded TF-Serving-protocol model server (gRPC + REST) over TF Sessions or ONNX Runtime."""
