"""Contract-test fake of the ACL lifetime of one process, as aclruntime drives it (both generations).

Written from the aclruntime sources of both ais_bench generations:

* github.com/Ascend/tools 9d6da90, ais-bench_workload/tool/ais_bench/backend/base/module/
  Tensor/TensorContext/TensorContext.cpp:26-41: the TensorContext constructor calls
  ``DeviceManager::InitDevices`` once; :73-77 the TensorContext is a process-wide singleton
  (``static std::shared_ptr``), built on first use and never again; :43-54 ``Finalize`` calls
  ``DestroyDevices`` once (``InitDeviceFlag_``); :56-59 the destructor finalizes at process exit;
* DeviceManager/DeviceManager.cpp:55-81 ``InitDevices``: aclInit on the first call only (a
  counter); :88-128 ``DestroyDevices``: contexts destroyed, devices reset, aclFinalize;
* github.com/Ascend/msit 42a9c80, ait/components/benchmark/backend/base/module/Tensor/
  TensorContext/TensorContext.cpp:27-59, :93 and DeviceManager/DeviceManager.cpp:54-130: the
  same lifetime.

ACL itself (CANN ``acl/acl_base.h``): ``ACL_ERROR_UNINITIALIZE = 100001`` (a call without aclInit,
or after aclFinalize), ``ACL_ERROR_REPEAT_INITIALIZE = 100002`` (aclInit is called once per
process). Every fake ACL call goes through :func:`require`, so a session created or used after
the process's aclFinalize fails as on a device instead of working as it did in earlier fakes.

``INTRADA_FAKE_ACL_LOG=FILE``: each aclInit, aclFinalize, model unload (aclmdlUnload) and refused
call is appended as ``<pid> <event> <detail>``, so a test can count them per process.
"""
from __future__ import annotations

import os

SUCCESS = 0
ACL_ERROR_UNINITIALIZE = 100001
ACL_ERROR_REPEAT_INITIALIZE = 100002


class AclError(RuntimeError):
    """An ACL call that failed; aclruntime turns its code into a RuntimeError message."""

    def __init__(self, call: str, code: int, why: str) -> None:
        self.code = code
        super().__init__(f"{call} failed, error code {code}: {why}")


_state = {"initialized": False, "finalized": False, "inits": 0, "finalizes": 0}


def record(event: str, detail: str = "") -> None:
    path = os.environ.get("INTRADA_FAKE_ACL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {event} {detail}".rstrip() + "\n")


def acl_init() -> int:
    """aclInit: once per process."""
    if _state["initialized"] or _state["finalized"]:
        record("refused", "aclInit")
        return ACL_ERROR_REPEAT_INITIALIZE
    _state["initialized"] = True
    _state["inits"] += 1
    record("aclInit")
    return SUCCESS


def acl_finalize() -> int:
    """aclFinalize: ends ACL for the rest of the process."""
    if not _state["initialized"] or _state["finalized"]:
        record("refused", "aclFinalize")
        return ACL_ERROR_UNINITIALIZE
    _state["finalized"] = True
    _state["finalizes"] += 1
    record("aclFinalize")
    return SUCCESS


def alive() -> bool:
    return bool(_state["initialized"]) and not _state["finalized"]


def require(call: str) -> None:
    """Any ACL call (aclrtSetDevice, aclmdlLoadFromFile, aclmdlExecute, aclrtMemcpy...) needs an
    initialized, not finalized ACL."""
    if not alive():
        why = "ACL was finalized in this process (aclFinalize)" if _state["finalized"] else "aclInit was not called"
        record("refused", call)
        raise AclError(call, ACL_ERROR_UNINITIALIZE, why)


def counts() -> dict[str, int]:
    return {"inits": int(_state["inits"]), "finalizes": int(_state["finalizes"])}
