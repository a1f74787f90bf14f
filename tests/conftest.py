"""Test-session set-up shared by every test module."""

import os

# As the CLI does (see magicportrait.cli.main): spinning OpenMP threads slow torch badly on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
