"""hybrid-llm policy pack: `pulumi preview --policy-pack policy` runs it.

Two ways in, told apart by how this file is started:
- The Pulumi runtime (`python -u -m pulumi.policy ENGINE DIR`, in this folder)
  runs it by path, as `__main__`, with this folder first on sys.path: it serves
  the pack (the analyzer prints its port and waits for the engine). So does
  `python policy/__main__.py`.
- `python -m policy PLAN.json` from the project root imports it as the module
  `policy.__main__`: a command line, which runs the same rules offline over the
  JSON `tools/plan.py --json` writes (see offline.py; `--help` explains).
"""

import sys
from pathlib import Path

if __spec__ is not None and __spec__.name == "policy.__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import offline

    sys.exit(offline.main())

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from pack import PACK_NAME, policies  # noqa: E402

PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.MANDATORY)
