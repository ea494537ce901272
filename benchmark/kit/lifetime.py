"""Helper processes (a `run --workers` slot, the RandAugment worker) that end with the process that
started them. Nothing heavy is imported here: a helper runs `follow_parent` before the imports that
take it seconds, so it is never left behind, even while it is starting."""
from __future__ import annotations

import os
import signal
import threading
import time

PARENT_POLL_S = 0.5


def follow_parent(parent: int) -> None:
    """First thing in a helper process: Ctrl-C is left to the parent (which handles it, so the helper
    prints no traceback), and the helper exits as soon as its parent is gone (killed, out of memory),
    whatever it is doing: a thread polls the parent's pid, as torch's DataLoader workers do."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
