"""Where do two runtimes start to differ: PyTorch and ONNX Runtime side by side, layer by layer
(:mod:`.layerdiff`, with the layer mapping :mod:`.layermap`, the per-layer statistics
:mod:`.layerstats` and the streamed ONNX intermediates :mod:`.onnxstream`). Imports parity and below."""
