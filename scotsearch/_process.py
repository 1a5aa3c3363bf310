"""Whether a writer process is still alive (for stale lock and temporary-file clean-up)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """``True`` unless process ``pid`` of this host is known to be gone.

    Doubtful cases answer ``True``: removing a live writer's files would corrupt its work,
    keeping a dead one's only wastes space until the next clean-up.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell
    return True
