"""Android entry point: the digits app (buildozer runs main.py)."""
import sys

from apps.digits.__main__ import main

sys.exit(main([]))
