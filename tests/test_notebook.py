"""The forecasting notebook runs, top to bottom, against a small study's MLflow store."""

import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "forecast_scaling.ipynb"


def _set_parameters(source: str, values: dict[str, object]) -> str:
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", source, flags=re.M)
        assert n == 1, f"parameter {name} not found in the notebook's first code cell"
    return source


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_forecast_notebook_runs_on_a_study(finished_study, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if c.cell_type == "code")
    assert params.source.startswith("# Parameters")
    params.source = _set_parameters(
        params.source,
        {
            "TRACKING_URI": finished_study["result"].tracking_uri,
            "EXPERIMENT": finished_study["spec"].name,
            "N_BOOT": 20,
            "OUT": str(tmp_path / "out"),
        },
    )
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "finished trials" in text and '"forecasts"' in text
    assert (tmp_path / "out" / "scaling.png").exists()
