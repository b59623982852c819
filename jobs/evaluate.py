"""``ray job submit`` entry point: re-evaluate a study's finished trials from their final
checkpoints into their own MLflow runs (``bioscale evaluate``).

    ray job submit --address $RAY_ADDRESS --working-dir . --runtime-env jobs/runtime_env.yaml \
        -- python jobs/evaluate.py jobs/studies/<name>.yaml --out /mnt/shared/bioscale-out/<name>

Add ``--task TASK`` to compute an evaluation task the study did not run, ``--run RUN_ID`` to
evaluate some trials only. Inside a Ray job ``RAY_ADDRESS`` is set, so it joins that cluster.
"""

import os
import sys

from bioscale.cli import main

if __name__ == "__main__":
    args = ["evaluate", *sys.argv[1:]]
    if os.environ.get("RAY_ADDRESS") and "--address" not in args:
        args += ["--address", os.environ["RAY_ADDRESS"]]
    sys.exit(main(args))
