"""What the two Cell Painting kinds (``profiles``, ``cellpainting``) share: samples are wells (or
sites of wells) on plates with negative controls, labelled by the compound that perturbed them,
in a manifest of the contract's metadata columns (``bioscale.data.manifest``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bioscale.data.kinds import DataKind, Wording

if TYPE_CHECKING:
    from bioscale.data import manifest as mf


class PlateKind(DataKind):
    """Base of the screen kinds: their manifest reader, their evaluation data, their words."""

    provides: ClassVar[frozenset[str]] = frozenset({"plates", "labels", "targets"})
    wording: ClassVar[Wording] = Wording(
        label="MoA", novel="novel compounds", held_out="held-out wells of seen compounds"
    )

    def inspect(self, path: str | Path) -> mf.ManifestInfo:
        from bioscale.data import manifest as mf

        return mf.inspect(path)

    def metadata(self, path: str | Path):
        from bioscale.data import manifest as mf

        return mf.read_metadata(path)
