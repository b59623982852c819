"""Entry point for `ray job submit`: run a study on the cluster the job runs in.

    ray job submit --address $RAY_ADDRESS --working-dir . -- python jobs/run_study.py jobs/studies/demo.yaml --out /shared/bioscale-out/demo

Inside a Ray job, ``RAY_ADDRESS`` is set, so the study joins that cluster instead of starting one.
"""

import os
import sys

from bioscale.cli import main

if __name__ == "__main__":
    args = ["study", "run", *sys.argv[1:]]
    if os.environ.get("RAY_ADDRESS") and "--address" not in args:
        args += ["--address", os.environ["RAY_ADDRESS"]]
    sys.exit(main(args))
