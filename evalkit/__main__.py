"""``python -m evalkit``: the same as the ``evalkit`` command.

Under torchrun (which sets ``TORCHELASTIC_ERROR_FILE`` for each worker) an uncaught exception is recorded
with torch's ``record``, so torchrun's failure summary shows the failing rank's traceback.
"""

import os
import sys

from evalkit.cli.main import main

if "TORCHELASTIC_ERROR_FILE" in os.environ:
    from torch.distributed.elastic.multiprocessing.errors import record

    main = record(main)

sys.exit(main())
