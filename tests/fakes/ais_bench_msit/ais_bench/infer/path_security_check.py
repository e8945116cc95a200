"""Fake of msit's ``ais_bench.infer.path_security_check`` and the CLI's path checks
(github.com/Ascend/msit 42a9c80, ait/components/benchmark/ais_bench/infer/):

* a path string: at most 4096 characters, components at most 255, only ``[_A-Za-z0-9/.-]``
  (path_security_check.py:29, :60-100);
* ``FileStat(path).is_basically_legal(perm)`` (:107-217), checking the path as given (``os.path.islink``
  on it, ``os.stat`` through it): it must exist unless written; not be a symlink; be owned by the
  user or one of its groups; for 'read' not be group- or other-writable and be readable by its
  owner; for 'write' (when it exists) not be group- or other-writable and be writable;
* ``ms_open`` writes files with mode 0o640 (:31, :250-293);
* the argparse types of the CLI (args_check.py:121-160): ``--model`` must pass 'read', end in
  ``.om`` and hold at most 10 GB; each ``--input`` item must pass 'read'; ``--output`` and
  ``--output_dirname`` must pass 'write'. A failure is an ``argparse.ArgumentTypeError`` ("om
  path:... is illegal. Please check."), so argparse exits with status 2, after the reason is logged.
"""
import argparse
import os
import re
import stat
import sys

PATH_WHITE_LIST_REGEX = re.compile(r"[^_A-Za-z0-9/.-]")
PERMISSION_NORMAL = 0o640
OM_MODEL_MAX_SIZE = 10 * 1024 * 1024 * 1024


def _error(message):
    print(f"[ERROR] {message}", flush=True)


def is_legal_args_path_string(path):
    if not path:
        return True
    if len(path) > 4096 or any(len(part) > 255 for part in path.split("/")):
        _error(f"file total path{path} length out of range, please check the file(or directory) path")
        return False
    if PATH_WHITE_LIST_REGEX.search(path):
        _error(f"path:{path} contains illegal char, legal chars include A-Z a-z 0-9 _ - / .")
        return False
    return True


class OpenException(Exception):
    pass


class FileStat:
    def __init__(self, file):
        if not is_legal_args_path_string(file):
            raise OpenException("create FileStat failed")
        self.file = file
        self.is_exists = os.path.exists(file)
        self.file_stat = os.stat(file) if self.is_exists else None
        self.realpath = os.path.realpath(file) if self.is_exists else None

    @property
    def is_softlink(self):
        return os.path.islink(self.file) if self.file_stat else False

    @property
    def is_dir(self):
        return stat.S_ISDIR(self.file_stat.st_mode) if self.file_stat else False

    @property
    def is_file(self):
        return stat.S_ISREG(self.file_stat.st_mode) if self.file_stat else False

    @property
    def permission(self):
        return stat.S_IMODE(self.file_stat.st_mode) if self.file_stat else 0o777

    def is_basically_legal(self, perm="none"):
        if not self.is_exists and perm != "write":
            _error(f"path: {self.file} not exist, please check if file or dir is exist")
            return False
        if self.is_softlink:
            _error(f"path :{self.file} is a soft link, not supported, please import file(or directory) directly")
            return False
        if self.is_exists:
            owner = self.file_stat.st_uid == os.geteuid()
            group = self.file_stat.st_gid in os.getgroups()
            if not (owner or group):
                _error(f"current user isn't path:{self.file}'s owner or ownergroup")
                return False
        if perm == "read":
            if self.permission & (stat.S_IWGRP | stat.S_IWOTH):
                _error(f"The file {self.file} is group writable, or is others writable, as import file(or directory), "
                       "permission should not be over 0o755(rwxr-xr-x)")
                return False
            if not os.access(self.realpath, os.R_OK) or self.permission & stat.S_IRUSR == 0:
                _error(f"Current user doesn't have read permission to the file {self.file}")
                return False
        elif perm == "write" and self.is_exists:
            if self.permission & (stat.S_IWGRP | stat.S_IWOTH):
                _error(f"The file {self.file} is group writable, or is others writable, as export file(or directory), "
                       "permission should not be over 0o755(rwxr-xr-x)")
                return False
            if not os.access(self.realpath, os.W_OK):
                _error(f"Current user doesn't have write permission to the file {self.file}")
                return False
        return True


def ms_open_write(file):
    """``ms_open(file, mode="wb")``: an existing file must be the user's and is removed first."""
    file_stat = FileStat(file)
    if file_stat.is_exists:
        if file_stat.file_stat.st_uid != os.geteuid():
            raise OpenException(f"The file owner is inconsistent with the current process user {file}")
        os.remove(file)
    return os.fdopen(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PERMISSION_NORMAL), "wb")


def _legal(value, perm, what):
    try:
        file_stat = FileStat(value)
    except Exception as err:
        raise argparse.ArgumentTypeError(f"{what}:{value} is illegal. Please check.") from err
    if not file_stat.is_basically_legal(perm):
        raise argparse.ArgumentTypeError(f"{what}:{value} is illegal. Please check.")
    return file_stat


def check_om_path_legality(value):
    file_stat = _legal(value, "read", "om path")
    if not file_stat.is_file or os.path.splitext(value)[1] != ".om" or file_stat.file_stat.st_size > OM_MODEL_MAX_SIZE:
        _error(f"path:{value}, file type not in ['om'] or too large")
        raise argparse.ArgumentTypeError(f"om path:{value} is illegal. Please check.")
    return value


def check_input_path_legality(value):
    if not value:
        return value
    for item in value.split(","):
        _legal(item, "read", "input path")
    return value


def check_output_path_legality(value):
    if not value:
        return value
    _legal(value, "write", "output path")
    return value


if sys.platform.startswith("win"):  # pragma: no cover - the fake runs on Linux only
    raise ImportError("the fake implements the Linux checks only")
