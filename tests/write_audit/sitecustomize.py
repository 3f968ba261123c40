"""Records what a launched process writes under ``UNLEARNLM_AUDIT_ROOT`` (tests/test_distributed.py).

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``, so the command under test stays the user's own
(``accelerate launch ... -m unlearnlm.cli run``). An audit hook (PEP 578) sees every file opened for writing, every
folder made and every rename or removal, including those of ``tempfile`` and ``torch.save``; at exit the paths go to
``UNLEARNLM_AUDIT_DIR/rank<RANK>.txt``. Nothing is recorded where the variables are unset (the launcher itself).
"""

import atexit
import os
import sys

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "tempfile.mkstemp", "tempfile.mkdtemp"}


def _install(root: str, log_dir: str, rank: str) -> None:
    written: set[str] = set()

    def watched(value) -> str | None:
        if isinstance(value, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(value))
            if path.startswith(root) and not path.startswith(log_dir):
                return path
        return None

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writes = any(c in mode for c in "wax+") if mode else bool(flags & _WRITE_FLAGS)
            paths = [path] if writes else []
        elif event in _EVENTS:
            paths = [a for a in args[:2] if not isinstance(a, int)]
        else:
            return
        for p in paths:
            if (path := watched(p)) is not None:
                written.add(path)

    def dump() -> None:
        with open(os.path.join(log_dir, f"rank{rank}.txt"), "w") as f:
            f.write("".join(p + "\n" for p in sorted(written)))

    sys.addaudithook(hook)
    atexit.register(dump)


_root, _log_dir, _rank = (os.environ.get(name) for name in ("UNLEARNLM_AUDIT_ROOT", "UNLEARNLM_AUDIT_DIR", "RANK"))
if _root and _log_dir and _rank is not None:
    _install(os.path.join(_root, ""), os.path.join(_log_dir, ""), _rank)
