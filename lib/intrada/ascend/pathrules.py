"""msit's path rules for the ais_bench CLI (infer/path_security_check.py, infer/utils.py, infer/args_check.py
of github.com/Ascend/msit ait/components/benchmark at 42a9c80): the strictest frontend's checks, which
the gate's staged inputs and the user's own paths must pass (the tools generation checks none)."""
from __future__ import annotations

import os
import re
import stat


#: characters msit's CLI accepts in a path (path_security_check.py:29, :80-89)
PATH_CHARS = "_A-Za-z0-9/.-"
_ILLEGAL = re.compile(rf"[^{PATH_CHARS}]")


def path_string_problem(path: str) -> str | None:
    """Why msit's ``is_legal_args_path_string`` refuses ``path`` (path_security_check.py:60-100):
    over 4096 characters, a component over 255, or a character outside ``[_A-Za-z0-9/.-]``."""
    if len(path) > 4096:
        return f"{len(path)} characters, more than 4096"
    long = [part for part in path.split("/") if len(part) > 255]
    if long:
        return f"component {long[0][:40]}... is longer than 255 characters"
    bad = sorted(set(_ILLEGAL.findall(path)))
    if bad:
        return f"characters {' '.join(repr(c) for c in bad)} are outside [{PATH_CHARS}]"
    return None


def file_problem(path: str, *, perm: str = "read") -> str | None:
    """Why msit's ``FileStat.is_basically_legal(perm)`` refuses ``path``
    (path_security_check.py:107-217): a symlink, not owned by this user or one of its groups, group-
    or other-writable, or (read) not readable / (write) not writable."""
    problem = path_string_problem(path)
    if problem is not None:
        return problem
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None if perm == "write" else "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    owner = st.st_uid == (os.geteuid() if hasattr(os, "geteuid") else 0)
    group = st.st_gid in (os.getgroups() if hasattr(os, "getgroups") else [0])
    if not (owner or group):
        return "is owned neither by this user nor by one of its groups"
    if stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is group- or other-writable (mode {stat.S_IMODE(st.st_mode):o})"
    if perm == "read" and (not os.access(path, os.R_OK) or not st.st_mode & stat.S_IRUSR):
        return "is not readable by its owner"
    if perm == "write" and not os.access(path, os.W_OK):
        return "is not writable by this user"
    return None
