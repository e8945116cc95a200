"""Contract-test fake of the tools-generation ``aclruntime`` binding (github.com/Ascend/tools 9d6da90,
ais-bench_workload/tool/ais_bench/backend/python/src/PyInferenceSession/PyInferenceSession.cpp:316-366):
``exec_time_list`` holds durations, ``finalize()`` is an instance method, there is no
``free_resource()``. See tests/fakes/python/intrada_fake_aclruntime.py."""
from intrada_fake_aclruntime import BaseTensor, MemorySummary, Tensor, session_options, sumary, tensor_desc  # noqa: F401
from intrada_fake_aclruntime import ToolsInferenceSession as InferenceSession


def model(modelPath, deviceId=0, options=None):  # noqa: N803 - the binding's keywords (PyInferenceSession.cpp:365)
    return InferenceSession(modelPath, deviceId, options)
