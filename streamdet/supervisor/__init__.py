"""The supervisor: the daemon's parent process (see :mod:`streamdet.supervisor.core`)."""

from streamdet.supervisor.children import Child, ChildTargets, child_entry
from streamdet.supervisor.core import Supervisor, run
from streamdet.supervisor.runtime import cleanup_stale_segments, local_endpoint, runtime_dir, send_reload

__all__ = ["Child", "ChildTargets", "Supervisor", "child_entry", "cleanup_stale_segments", "local_endpoint", "run",
           "runtime_dir", "send_reload"]
