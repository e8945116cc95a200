"""Fake of the tools-generation ``ais_bench.infer.interface`` (github.com/Ascend/tools 9d6da90,
ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py), driving the fake aclruntime as the
real one drives the binding:

* ``InferSession(device_id, model_path, acl_json_path=None, debug=False, loop=1)`` builds
  ``aclruntime.InferenceSession`` from ``session_options`` (:7-27);
* ``get_inputs``/``get_outputs`` (:29-41), ``set_loop_count`` (:43-45), ``set_staticbatch`` and
  ``set_dynamic_batchsize`` (:48-52), ``create_tensor_from_fileslist`` /
  ``create_tensor_from_arrays_to_device`` (:66-72), ``convert_tensors_to_host/arrays`` (:74-83);
* ``run(feeds, out_array=False)``: numpy feeds become ``BaseTensor(address, nbytes)`` (:85-101);
* ``reset_sumaryinfo()`` and ``sumary()``, spelled so (:103-107); ``sumary().exec_time_list`` holds
  one duration in ms per execution;
* ``finalize()`` is an instance method calling the binding's (:108-110), which also ends ACL for the
  process; there is no ``free_resource``;
* ``infer(feeds, mode='static'|'dymdims'|'dymshape', custom_sizes=100000)``: numpy, numpy scalar,
  aclruntime.Tensor or torch feeds, anything else a RuntimeError (:112-162); mode 'static' sets
  nothing, so a batch chosen with ``set_dynamic_batchsize`` stays;
* ``MemorySummary.get_H2D_time_list/get_D2H_time_list/reset`` (:164-180).
"""
import aclruntime
import numpy as np

_TORCH_TYPES = ["torch.FloatTensor", "torch.DoubleTensor", "torch.HalfTensor", "torch.BFloat16Tensor",
                "torch.ByteTensor", "torch.CharTensor", "torch.ShortTensor", "torch.LongTensor", "torch.BoolTensor",
                "torch.IntTensor"]
_NP_SCALARS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.float16, np.float32,
               np.float64]


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False,
                 loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        options = aclruntime.session_options()
        if acl_json_path is not None:
            options.acl_json_path = acl_json_path
        options.log_level = 1 if debug else 2
        options.loop = self.loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]

    def get_inputs(self):
        self.intensors_desc = self.session.get_inputs()
        return self.intensors_desc

    def get_outputs(self):
        self.outtensors_desc = self.session.get_outputs()
        return self.outtensors_desc

    def set_loop_count(self, loop):
        self.session.options().loop = loop

    def set_staticbatch(self):
        self.session.set_staticbatch()

    def set_dynamic_batchsize(self, dymBatch):  # noqa: N803 - upstream's name
        self.session.set_dynamic_batchsize(dymBatch)

    def set_dynamic_hw(self, w, h):
        self.session.set_dynamic_hw(w, h)

    def set_dynamic_dims(self, dym_dims):
        self.session.set_dynamic_dims(dym_dims)

    def set_dynamic_shape(self, dym_shape):
        self.session.set_dynamic_shape(dym_shape)

    def set_custom_outsize(self, custom_sizes):
        self.session.set_custom_outsize(custom_sizes)

    def create_tensor_from_fileslist(self, desc, files):
        return self.session.create_tensor_from_fileslist(desc, files)

    def create_tensor_from_arrays_to_device(self, arrays):
        tensor = aclruntime.Tensor(arrays)
        tensor.to_device(self.device_id)
        return tensor

    def convert_tensors_to_host(self, tensors):
        for tensor in tensors:
            tensor.to_host()

    def convert_tensors_to_arrays(self, tensors):
        return [np.array(tensor) for tensor in tensors]

    def run(self, feeds, out_array=False):
        if len(feeds) > 0 and isinstance(feeds[0], np.ndarray):
            inputs = [aclruntime.BaseTensor(a.__array_interface__["data"][0], a.nbytes) for a in feeds]
        else:
            inputs = feeds
        outputs = self.session.run(self.outputs_names, inputs)
        if out_array:
            self.convert_tensors_to_host(outputs)
            return self.convert_tensors_to_arrays(outputs)
        return outputs

    def reset_sumaryinfo(self):
        self.session.reset_sumaryinfo()

    def sumary(self):
        return self.session.sumary()

    def finalize(self):
        if hasattr(self.session, "finalize"):
            self.session.finalize()

    def infer(self, feeds, mode="static", custom_sizes=100000):
        inputs = []
        for feed in feeds:
            if type(feed) is np.ndarray:
                inputs.append(feed)
            elif type(feed) in _NP_SCALARS:
                inputs.append(np.array(feed))
            elif type(feed) is aclruntime.Tensor:
                inputs.append(feed)
            elif hasattr(feed, "type") and feed.type() in _TORCH_TYPES:
                array = feed.numpy()
                inputs.append(array if feed.is_contiguous() else np.ascontiguousarray(array))
            else:
                raise RuntimeError("type:{} invalid".format(type(feed)))
        if mode in ("dymshape", "dymdims"):
            names = [d.name for d in self.get_inputs()]
            shapes = ";".join(f"{n}:{','.join(str(v) for v in a.shape)}" for n, a in zip(names, inputs))
            if mode == "dymshape":
                self.session.set_dynamic_shape(shapes)
                if isinstance(custom_sizes, int):
                    custom_sizes = [custom_sizes] * len(self.get_outputs())
                self.session.set_custom_outsize(custom_sizes)
            else:
                self.session.set_dynamic_dims(shapes)
        return self.run(inputs, out_array=True)


class MemorySummary:
    @staticmethod
    def get_H2D_time_list():  # noqa: N802 - upstream's name
        return aclruntime.MemorySummary().H2D_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def get_D2H_time_list():  # noqa: N802
        return aclruntime.MemorySummary().D2H_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def reset():
        if hasattr(aclruntime, "MemorySummary"):
            aclruntime.MemorySummary().reset()
