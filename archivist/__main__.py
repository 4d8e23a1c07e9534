"""`python -m archivist ...`: the command line (`archivist.cli`)."""
import sys

from .cli import main

sys.exit(main())
