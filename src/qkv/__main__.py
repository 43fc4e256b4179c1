"""`python -m qkv ...` (also what `torchrun -m qkv train ...` runs)."""

import sys

from qkv.cli import main

sys.exit(main())
