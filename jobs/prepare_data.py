"""``ray job submit`` entry point: prepare data on the cluster (``bioscale data ...``).

    python jobs/prepare_data.py synth profiles --out /shared/data/synth
    python jobs/prepare_data.py import cellprofiler load_data.csv --root s3://bucket/images \
        --metadata /shared/metadata --out /shared/data/manifest.parquet
    python jobs/prepare_data.py check /shared/data/manifest.parquet --address auto
    python jobs/prepare_data.py pack /shared/data/manifest.parquet --out /shared/data/shards

Write outputs to storage every node reads (a shared file system or object storage), never into
the job's working directory, which is discarded when the job ends.
"""

import sys

from bioscale.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", *sys.argv[1:]]))
