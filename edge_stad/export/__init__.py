"""ONNX export of the two streaming graphs (encoder, head) with checks and a PyTorch parity test."""
