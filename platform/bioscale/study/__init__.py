"""Studies: the YAML spec, grid expansion and trial keys, the Ray Tune driver and MLflow conventions."""
