"""``ray job submit`` entry point: fit scaling laws.

python jobs/fit_scaling.py jobs/studies/demo.yaml --out /shared/bioscale-out/demo
    → ``bioscale study report``: fits every finished trial of the study, logs the fits as MLflow
      ``fit`` runs under the study's parent run, writes the HTML report
python jobs/fit_scaling.py --experiment NAME --metric M --axis D --json fits.json
    → ``bioscale fit``: the same fits from any MLflow experiment or trial table
"""

import sys

from bioscale.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    study = bool(argv) and argv[0].endswith((".yaml", ".yml"))
    sys.exit(main(["study", "report", *argv] if study else ["fit", *argv]))
