"""Contract-test fake of the msit-generation ``aclruntime`` 0.0.2 binding (github.com/Ascend/msit 42a9c80,
ait/components/benchmark/backend/python/src/PyInferenceSession/PyInferenceSession.cpp:659-758):
``exec_time_list`` holds (start, end) pairs, ``free_resource()`` releases one session, ``finalize()``
is static and process-wide. See tests/fakes/python/intrada_fake_aclruntime.py."""
from intrada_fake_aclruntime import (BaseTensor, MemorySummary, Tensor, infer_options, session_options,  # noqa: F401
                                     sumary, tensor_desc)
from intrada_fake_aclruntime import MsitInferenceSession as InferenceSession


def model(modelPath, deviceId=0, options=None):  # noqa: N803 - the binding's keywords (PyInferenceSession.cpp:735)
    return InferenceSession(modelPath, deviceId, options)
