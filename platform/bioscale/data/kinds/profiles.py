"""``profiles``: one sample is a well's feature vector (CellProfiler/pycytominer profiles, or the
synthetic screen), a fixed-width float32 ``features`` column (ARCHITECTURE "Manifest")."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioscale.data.kinds import DataCpus, Synthesized, Synthetic, TrialSets, register
from bioscale.data.kinds.plates import PlateKind
from bioscale.errors import ManifestError

if TYPE_CHECKING:
    from bioscale.data import manifest as mf

log = logging.getLogger(__name__)


@register
class Profiles(PlateKind):
    name = "profiles"
    settings = frozenset({"non_finite", "synthetic", "preprocess"})
    synthetic = Synthetic(
        help="a synthetic Cell Painting profile screen (manifest + JUMP-style metadata); the "
        "same settings as a study's data.synthetic",
        config="bioscale.data.synth:SynthProfilesConfig",
    )

    def synthesize(self, config: Any, out: str | Path) -> Synthesized:
        from bioscale.data.synth import generate_profiles

        path = generate_profiles(config, out)
        return Synthesized(
            manifest=Path(path), summary=f"wrote JUMP-style metadata in {Path(out) / 'metadata'}"
        )

    def alignment_refusal(self, evaluation: str) -> str | None:
        if evaluation in ("saliency", "adversarial"):
            return (
                f"alignment.{evaluation} compares image gradients with human maps; data.kind "
                "'profiles' has no images (use data.kind natural, or cellpainting with a "
                "path_map column)"
            )
        if evaluation in ("neural", "threedpc"):
            return (
                f"alignment.{evaluation} shows the model RGB stimuli; it applies to natural-image "
                "studies (3-channel rungs), not data.kind 'profiles'"
            )
        return None

    def identity(self, data: Any) -> dict[str, Any]:
        # samples left out are another data set; the default (refuse them) adds nothing, so
        # keys of studies without NaN/Inf features are what they always were; likewise the
        # preprocessing, only when set
        from dataclasses import asdict

        out: dict[str, Any] = {}
        if data.non_finite != "error":
            out["non_finite"] = data.non_finite
        if data.preprocess.enabled:
            out["preprocess"] = asdict(data.preprocess)
        return out

    def check(self, data: Any, path: str | Path) -> None:
        """Profiles holding NaN/±Inf features are refused, naming the samples and features
        (``data.non_finite: drop`` leaves them out instead, ``excluded``)."""
        from bioscale.data import manifest as mf

        bad = mf.non_finite_features(path)
        if not bad:
            return
        if data.non_finite == "drop":
            log.warning(
                "data.non_finite: drop: %d sample(s) with NaN/Inf features left out", len(bad)
            )
            return
        shown = "; ".join(f"{sid}: {what}" for sid, what in list(bad.items())[:5])
        raise ManifestError(
            f"manifest {path}: {len(bad)} sample(s) hold NaN or infinite features ({shown}"
            f"{'; ...' if len(bad) > 5 else ''}). Fix or impute them upstream, or set "
            "data.non_finite: drop in the study to leave those samples out."
        )

    def excluded(self, data: Any, path: str | Path) -> set[str]:
        from bioscale.data import manifest as mf

        return set(mf.non_finite_features(path)) if data.non_finite == "drop" else set()

    def sample_shape(self, data: Any, info: mf.ManifestInfo, path: str | Path) -> tuple[int, ...]:
        if info.n_features is None:
            raise ManifestError(
                f"manifest {path} has no 'features' column; data.kind 'profiles' needs a profile "
                "manifest (or set data.kind: cellpainting for an image manifest)"
            )
        if data.preprocess.enabled:
            return (self.prepare(data, path).n_out,)
        return (info.n_features,)

    def prepare(self, data: Any, path: str | Path, progress: Any = None) -> Any:
        """``data.preprocess``: the transform fitted on the training-pool wells (once per
        process and manifest: the plan's sample shape and the trials' payload share it)."""
        if not data.preprocess.enabled:
            return None
        import os

        stat = os.stat(path)  # the cache's key: this file as it is now (no re-hashing)
        return _fitted(str(path), f"{stat.st_size}:{stat.st_mtime_ns}", data)

    def artifacts(self, prepared: Any, folder: Path) -> list[Path]:
        if prepared is None:
            return []
        return [prepared.save(Path(folder) / "preprocess.npz")]

    def load_prepared(self, data: Any, folder: Path) -> Any:
        from bioscale.data.preprocess import load_fitted

        path = Path(folder) / "preprocess.npz"
        if not data.preprocess.enabled or not path.exists():
            return None
        fitted = load_fitted(path)
        return fitted if fitted.config == data.preprocess else None

    def any_sample_shape(self, data: Any) -> tuple[int, ...]:
        return (8,)

    def datasets(
        self,
        data: Any,
        manifest: str,
        index: Any,
        sets: TrialSets,
        cpus: DataCpus,
        skips: Any = None,
        prepared: Any = None,
    ) -> dict[str, Any]:
        """The training diet is read, selected and labelled by Ray Data tasks and held in the
        object store (profiles are small), so the Train workers never wait on data tasks. The two
        small evaluation sets are read straight from the rows they need: two fewer Ray Data
        executions per trial, which on a small machine cost more than the trial's training."""
        from bioscale.data.pipeline import profile_rows, read_profiles, with_labels
        from bioscale.data.preprocess import PLATE_COLUMN, apply_batch

        ids = index.sample_id
        fitted = prepared if data.preprocess.enabled else None
        if data.preprocess.enabled and fitted is None:
            fitted = self.prepare(data, manifest)

        def small(targets):  # val and probe: preprocessed in this process, before Ray sees them
            transform = None
            if fitted is not None:
                codes = fitted.plate_codes(index.plate[targets.rows])
                transform = lambda x: fitted.apply(x, codes)  # noqa: E731
            return profile_rows(manifest, ids[targets.rows], targets.columns, transform)

        profiles = read_profiles(manifest, cpus_per_task=cpus.select)
        train_labels = sets.train.columns
        if fitted is not None:  # each training row's plate travels with it to the normaliser
            codes = fitted.plate_codes(index.plate[sets.train.rows])
            train_labels = train_labels | {PLATE_COLUMN: codes}
        train = with_labels(profiles, ids[sets.train.rows], train_labels, cpus_per_task=cpus.select)
        if fitted is not None:
            train = train.map_batches(
                apply_batch,
                batch_format="numpy",
                num_cpus=cpus.select,
                fn_kwargs={"fitted": fitted},
            )
        return {"train": train.materialize(), "val": small(sets.val), "probe": small(sets.probe)}


@functools.lru_cache(maxsize=8)
def _fitted_cached(path: str, version: str, config: Any, splits: Any, non_finite: str):
    from bioscale.data.kinds import read_index
    from bioscale.data.preprocess import fit_preprocess

    data = _DataView(kind="profiles", splits=splits, non_finite=non_finite)
    return fit_preprocess(path, read_index(data, path), config)


def _fitted(path: str, version: str, data: Any):
    return _fitted_cached(path, version, data.preprocess, data.splits, data.non_finite)


@dataclasses.dataclass(frozen=True)
class _DataView:
    """What ``read_index`` reads of a study's ``data:`` (hashable, for the cache)."""

    kind: str
    splits: Any
    non_finite: str
