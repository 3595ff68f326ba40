"""The open file limit: the server (every connection) and ``ourmail backup`` (three
descriptors per folder of a mailbox taken at one moment) need more than the usual 1024."""

from __future__ import annotations

import resource

from twisted.logger import Logger

log = Logger()


def raise_open_file_limit() -> None:
    """Lift the soft limit of open files to the hard one (2**20 when that is unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warn("cannot raise the open file limit from {soft}: {e}", soft=soft, e=e)
        return
    log.info("open file limit raised from {soft} to {target}", soft=soft, target=target)
