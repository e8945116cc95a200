"""Dumps to mIoU, exactly as the seed's postprocess: the bilinear upsample of the logits and the
argmax (:mod:`.postprocess`, :mod:`.postprocess_dense`, :mod:`.bilinear`), the dataset-level
confusion matrix (:mod:`.metrics`) and the split's evaluation (:mod:`.evaluate`). Imports
:mod:`intrada.core` and :mod:`intrada.dataset`."""
