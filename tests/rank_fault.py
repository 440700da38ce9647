"""Entry point for the failing-rank test: ``python -m evalkit`` whose forward pass raises on one rank.

Run by ``torchrun`` as a script; the rank named by ``EVALKIT_TEST_FAIL_RANK`` gets a backend whose
``score_groups`` raises, every other rank runs unchanged.
"""

import os
import runpy

from evalkit.scoring import hf_backend

if os.environ.get("RANK") == os.environ["EVALKIT_TEST_FAIL_RANK"]:

    def _broken(self, groups):
        raise RuntimeError("injected fault in the forward pass")

    hf_backend.HFBackend.score_groups = _broken

runpy.run_module("evalkit", run_name="__main__", alter_sys=True)
