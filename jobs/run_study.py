"""``ray job submit`` entry point: run (or, with ``--resume``, resume) a study on the job's cluster.

    ray job submit --address $RAY_ADDRESS --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/run_study.py jobs/studies/demo.yaml --out /shared/bioscale-out/demo

Inside a Ray job ``RAY_ADDRESS`` is set, so the study joins that cluster instead of starting one.
Every other argument is ``bioscale study run``'s (``--resume`` selects ``bioscale study resume``).
"""

import os
import sys

from bioscale.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    command = "resume" if "--resume" in argv else "run"
    args = ["study", command, *(a for a in argv if a != "--resume")]
    if os.environ.get("RAY_ADDRESS") and "--address" not in args:
        args += ["--address", os.environ["RAY_ADDRESS"]]
    sys.exit(main(args))
