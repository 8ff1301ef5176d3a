"""``python -m core generate|video|examples`` (see docs/cli.md)."""

import os
import sys

from .cli.main import abandoned_work, main

if __name__ == "__main__":
    code = main()
    if abandoned_work():
        # A second Ctrl-C left torch computing in a worker thread; normal interpreter shutdown
        # would abort under it, so leave at once (nothing of the job was written).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
