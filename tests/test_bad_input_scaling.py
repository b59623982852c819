"""Bad input to ``bioscale fit`` / ``forecast``: a one-line error on stderr that names the thing
and the fix, a non-zero exit, no traceback. Run in-process (``bioscale.cli.main``)."""

import socket
import time

import numpy as np
import pytest

from bioscale.cli import main
from bioscale.scaling.runs import write_csv

pytestmark = pytest.mark.timeout(60)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad")
    x = np.geomspace(100, 1e5, 6)
    good = [{"D": float(d), "seed": 0, "loss": float(0.1 + 2 * d**-0.35)} for d in x]
    (out / "empty.csv").write_text("")
    (out / "binary.csv").write_bytes(bytes(range(256)) * 8)
    write_csv(good, out / "good.csv")
    write_csv([{**r, "loss": float("nan")} for r in good], out / "nan.csv")
    write_csv(good[:2], out / "two.csv")
    write_csv([{**r, "D": f"diet-{i}"} for i, r in enumerate(good)], out / "text_axis.csv")
    probe = [{"D": r["D"], "probe/moa/novel_compounds/top1": 1 - r["loss"]} for r in good]
    write_csv(probe, out / "probe.csv")
    return out


FIT = ["fit", "--metric", "loss", "--bootstrap", "0"]
FC = ["forecast", "--metric", "loss", "--bootstrap", "0"]
#: (argv with {t} = the tables folder, exit code, words the error must contain)
CASES = [
    ([*FIT, "{t}/empty.csv"], 2, ["empty.csv", "is empty", "header row"]),
    ([*FIT, "{t}/binary.csv"], 2, ["binary.csv", "not a UTF-8 text", "export"]),
    ([*FIT, "{t}/good.csv", "--law", "chinchilla"], 2, ["'chinchilla' takes 2", "--axis N,D"]),
    ([*FIT, "{t}/good.csv", "--axis", "N,D"], 2, ["'power' takes 1", "one axis"]),
    ([*FIT, "{t}/nan.csv"], 1, ["no power fit of loss", "needs at least 4 distinct scales"]),
    ([*FIT, "{t}/two.csv"], 1, ["no power fit", "needs at least 4 distinct scales, has 2"]),
    ([*FIT, "{t}/text_axis.csv"], 2, ["column 'D' is not numeric", "numeric scale column"]),
    ([*FIT, "{t}/good.csv", "--bootstrap", "-1"], 2, ["--bootstrap -1", "≥ 0"]),
    ([*FIT, "{t}/good.csv", "--bootstrap-scheme", "cases", "--bootstrap", "-3"], 2, ["≥ 0"]),
    (
        ["fit", "{t}/probe.csv", "--metric", "probe/moa/novel_compounds/top1", "--frontier"],
        2,
        ["no validation column", "--frontier-select"],
    ),
    ([*FIT, "{t}/good.csv", "--frontier", "--frontier-select", "val/nope"], 2, ["no such column"]),
    ([*FC, "{t}/good.csv", "--target", "0.15", "--along", "Q"], 2, ["along 'Q'", "axes are D"]),
    ([*FC, "{t}/good.csv", "--target", "nan"], 2, ["--target nan", "finite"]),
    ([*FC, "{t}/good.csv", "--target", "5"], 2, ["already met by every observed", "below"]),
    ([*FC, "{t}/good.csv", "--target", "0.15", "--at", "N=big"], 2, ["--at 'N=big'", "number"]),
    ([*FIT, "--experiment", "x", "--tracking-uri", "foo://bar"], 2, ["unknown scheme 'foo'"]),
    (
        ["report", "--experiment", "x", "--tracking-uri", "foo://bar", "--out", "{t}/r"],
        2,
        ["unknown scheme 'foo'", "sqlite:////"],
    ),
    (
        [*FIT, "--experiment", "x", "--tracking-uri", "sqlite:///{t}/none.db"],
        2,
        ["no MLflow store", "none.db"],
    ),
]


@pytest.mark.parametrize(("argv", "code", "words"), CASES, ids=lambda v: None)
def test_bad_input_gives_a_one_line_error(tables, capsys, argv, code, words):
    argv = [a.format(t=tables) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("bioscale: error:")]
    assert errors, err
    for word in words:
        assert any(word in line for line in errors), (word, err)


def test_an_unreachable_tracking_server_fails_fast(capsys):
    uri = f"http://127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    assert main(["fit", "--experiment", "x", "--tracking-uri", uri, "--metric", "loss"]) == 2
    assert time.monotonic() - t0 < 30
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"MLflow tracking server {uri} is not reachable" in line and "Start it" in line
