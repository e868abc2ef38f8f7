"""Process limits that a server holding many connections needs."""

from __future__ import annotations

import resource

# Every open event stream is a socket: 10,000 streams need 10,000 descriptors, and the usual soft limit is 1,024.
OPEN_FILES_WANTED = 65536


def open_files_raise(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise this process's soft limit on open files to ``wanted``, or as far as the hard limit allows; return it.

    Docker's default hard limit is 1,048,576; a host with a lower one raises it with ``ulimit -Hn``, Compose's
    ``ulimits`` or systemd's ``LimitNOFILE``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    return max(soft, target)
