"""Frozen MLflow names shared by the study driver and the analysis (ARCHITECTURE "MLflow names")."""

KIND = "bioscale.kind"  # study | trial | fit | report
TRIAL_KEY = "bioscale.trial_key"
NODE_IDS = "bioscale.node_ids"
STUDY_SHA = "bioscale.study_sha"
FIT_ID = "bioscale.fit_id"
PARENT = "mlflow.parentRunId"

#: The trial params every trial run carries.
TRIAL_PARAMS = (
    "rung",
    "model_family",
    "N",
    "N_heads",
    "diet",
    "diet_seed",
    "D_samples",
    "D_compounds",
    "objective",
    "seed",
    "epochs",
    "lr",
    "batch_size",
    "manifest_sha",
    "git_sha",
)
#: Metric namespaces bioscale logs.
METRIC_PREFIXES = (
    "train/",
    "val/",
    "perf/",
    "probe/",
    "compute/",
    "retrieval/",
    "align/",
    "neural/",
    "adv/",
    "leakage/",
    "nsc/",
    "nscb/",
    "track/",
    "fit/",
)
#: The tag on a study run that says which driver holds the study now (``bioscale.study.lock``).
LEASE = "bioscale.lease"


def filter_value(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter: single-quoted, or double-quoted
    when it holds a single quote (MLflow's filter grammar has no escape character)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"{value!r} holds both quote characters and cannot be searched for in MLflow")
