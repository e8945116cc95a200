"""Fake of the msit-generation ``ais_bench.infer.interface`` (github.com/Ascend/msit 42a9c80,
ait/components/benchmark/ais_bench/infer/interface.py), driving the fake aclruntime as the real
one drives the binding:

* ``InferSession(device_id, model_path, acl_json_path=None, debug=False, loop=1)`` (:72-104) keeps
  ``infer_mode_switch``, a dict of its own bound methods, so a session is in a reference cycle;
* ``finalize()`` is a static method ending ACL for the process (:119-122);
* ``reset_summaryinfo()`` and ``summary()`` (:467-468, :649-650) call the binding's
  ``reset_sumaryinfo``/``sumary``; ``summary().exec_time_list`` holds (start, end) pairs in ms;
  InferSession has no ``sumary``/``reset_sumaryinfo``;
* ``free_resource()`` releases this session (:509-511);
* ``infer(feeds, mode='static', custom_sizes=100000, out_array=True)`` (:470-507): mode 'static'
  calls ``set_staticbatch`` (:652-653), 'dymbatch' sets the batch from the feed's dim where the
  input's is -1 (:655-666); an unknown mode is a RuntimeError;
* ``get_max_dym_batchsize``, ``get_dym_aipp_input_exist`` (:152-153, :172-176);
* ``MemorySummary.get_h2d_time_list/get_d2h_time_list/reset``, lower case (:871-889).
"""
import aclruntime
import numpy as np

TORCH_TENSOR_LIST = ["torch.FloatTensor", "torch.DoubleTensor", "torch.HalfTensor", "torch.BFloat16Tensor",
                     "torch.ByteTensor", "torch.CharTensor", "torch.ShortTensor", "torch.LongTensor",
                     "torch.BoolTensor", "torch.IntTensor"]
NP_TYPE_LIST = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.float16, np.float32,
                np.float64]


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False,
                 loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        self.loop = loop
        self.options = aclruntime.session_options()
        self.acl_json_path = acl_json_path
        self.debug = debug
        if acl_json_path is not None:
            self.options.acl_json_path = self.acl_json_path
        self.options.log_level = 1 if self.debug else 2
        self.options.loop = self.loop
        self.session = aclruntime.InferenceSession(self.model_path, self.device_id, self.options)
        self.outputs_names = [meta.name for meta in self.session.get_outputs()]
        self.intensors_desc = self.session.get_inputs()
        self.outtensors_desc = self.session.get_outputs()
        self.infer_mode_switch = {"static": self._static_prepare, "dymbatch": self._dymbatch_prepare}

    @staticmethod
    def convert_tensors_to_host(tensors):
        for tensor in tensors:
            tensor.to_host()

    @staticmethod
    def convert_tensors_to_arrays(tensors):
        return [np.array(tensor) for tensor in tensors]

    @staticmethod
    def finalize():
        if hasattr(aclruntime.InferenceSession, "finalize"):
            aclruntime.InferenceSession.finalize()

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

    def set_dynamic_batchsize(self, dym_batch):
        self.session.set_dynamic_batchsize(dym_batch)

    def get_max_dym_batchsize(self):
        return self.session.get_max_dym_batchsize()

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

    def get_dym_aipp_input_exist(self):
        return self.session.get_dym_aipp_input_exist()

    def check_dym_aipp_input_exist(self):
        self.session.check_dym_aipp_input_exist()

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

    def reset_summaryinfo(self):
        self.session.reset_sumaryinfo()

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        inputs, shapes = [], []
        for feed in feeds:
            if type(feed) is np.ndarray:
                item = feed if feed.flags.c_contiguous else np.ascontiguousarray(feed)
                shapes.append(item.shape)
            elif type(feed) in NP_TYPE_LIST:
                item = np.array(feed)
                shapes.append([feed.size])
            elif type(feed) is aclruntime.Tensor:
                item = feed
                shapes.append(item.shape)
            elif hasattr(feed, "type") and feed.type() in TORCH_TENSOR_LIST:
                item = feed.numpy()
                item = item if feed.is_contiguous() else np.ascontiguousarray(item)
                shapes.append(item.shape)
            else:
                raise RuntimeError("type:{} invalid".format(type(feed)))
            inputs.append(item)
        if mode in ("dymhw", "dymdims", "dymshape"):
            raise RuntimeError(f"the fake ais_bench implements infer modes static and dymbatch, not {mode}")
        if self.infer_mode_switch.get(mode) is None:
            raise RuntimeError("wrong infer_mode:{}, only support \"static\",\"dymbatch\",\"dymhw\", "
                               "\"dymdims\",\"dymshape\"".format(mode))
        self.infer_mode_switch.get(mode)(shapes, custom_sizes)
        return self.run(inputs, out_array)

    def free_resource(self):
        if hasattr(self.session, "free_resource"):
            self.session.free_resource()

    def summary(self):
        return self.session.sumary()

    def _static_prepare(self, shapes, custom_sizes):
        self.set_staticbatch()

    def _dymbatch_prepare(self, shapes, custom_sizes):
        indesc = self.get_inputs()
        if len(shapes) != len(indesc):
            raise RuntimeError("input datas and intensors nums not matched!")
        for i, shape in enumerate(shapes):
            for j, dim in enumerate(shape):
                if indesc[i].shape[j] < 0:
                    self.set_dynamic_batchsize(dim)
                    return
                if indesc[i].shape[j] != dim:
                    raise RuntimeError("input datas and intensors dim not matched!")
        raise RuntimeError("not a dymbatch model!")


class MemorySummary:
    @staticmethod
    def get_h2d_time_list():
        return aclruntime.MemorySummary().H2D_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def get_d2h_time_list():
        return aclruntime.MemorySummary().D2H_time_list if hasattr(aclruntime, "MemorySummary") else []

    @staticmethod
    def reset():
        if hasattr(aclruntime, "MemorySummary"):
            aclruntime.MemorySummary().reset()
