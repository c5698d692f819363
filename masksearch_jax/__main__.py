"""`python -m masksearch_jax` is the `masksearch` command."""

import sys

from masksearch_jax.cli import main

sys.exit(main())
