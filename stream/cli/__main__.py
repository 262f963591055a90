"""`python -m stream.cli ...` is `recstream ...`."""
import sys

from stream.cli import main

sys.exit(main())
