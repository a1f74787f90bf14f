"""``python -m magicportrait.batch JOBS -o OUT [options]``: ``magicportrait batch`` for launchers that start a
module in every process (``torchrun --nproc-per-node 4 -m magicportrait.batch ...``, ``accelerate launch -m
magicportrait.batch ...``): each process runs its share of the rows (``RANK`` of ``WORLD_SIZE``) on its own GPU
(``LOCAL_RANK``)."""

import sys

from magicportrait.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["batch", *sys.argv[1:]]))
