"""``python slow_disk.py train ...``: the ``rnnlab`` command on a slow disk.

Every checkpoint file is written 256 bytes at a time with a millisecond between writes, so that a
kill at a random moment often lands in the middle of a save (the kill campaign's hardest case).
"""

import os
import sys
import time

from rnnlab.cli import main
from rnnlab.train import checkpoint


def slow_write(fd: int, data) -> int:
    time.sleep(0.001)
    return os.write(fd, bytes(data[:256]))


checkpoint._write = slow_write
sys.exit(main(prog_name="rnnlab"))
