"""``python -m pynn``: the command line."""
from pynn.cli import main

raise SystemExit(main())
