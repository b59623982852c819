import pytest

from bioscale.study.plan import GridPoint, plan
from bioscale.study.spec import StudySpec

STUDY = {
    "name": "k",
    "data": {"synthetic": {}},
    "grids": [{"rung": ["debug"], "diet": [{"replicates": 0.5}], "objective": ["ibp"]}],
    "train": {"budget": {"epochs": 2}},
}


def keyed(manifest, **train):
    spec = dict(STUDY)
    spec["train"] = {**STUDY["train"], **train}
    return plan(StudySpec.from_dict(spec), manifest).trials[0]


def test_trial_key_is_stable_and_tracks_the_resolved_config(synth_manifest):
    a = keyed(synth_manifest)
    assert keyed(synth_manifest).key == a.key
    assert keyed(synth_manifest, lr={"value": 3e-4}).key != a.key
    assert keyed(synth_manifest, budget={"epochs": 3}).key != a.key
    assert len(a.key) == 64


def test_resources_do_not_change_the_key(synth_manifest):
    spec = dict(STUDY, resources={"max_concurrent_trials": 7})
    assert (
        plan(StudySpec.from_dict(spec), synth_manifest).trials[0].key == keyed(synth_manifest).key
    )


def test_manifest_changes_the_key(synth_manifest, tmp_path):
    from bioscale.data.synth import SynthProfilesConfig, generate_profiles

    other = generate_profiles(
        SynthProfilesConfig(
            seed=99,
            n_moa=8,
            compounds_per_moa=4,
            n_extra=24,
            n_unlabelled_moa=4,
            plates_per_batch=2,
        ),
        tmp_path,
    )
    assert keyed(other).key != keyed(synth_manifest).key


def test_trial_params_use_the_frozen_names(synth_manifest):
    trial = keyed(synth_manifest)
    for name in (
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
    ):
        assert name in trial.params
    assert trial.params["N"] > 0 and trial.loop.flops_per_sample > 0
    assert GridPoint.from_dict(trial.point.as_dict()) == trial.point


@pytest.mark.parametrize(
    "rule,expected",
    [
        ({"rule": "constant", "value": 2e-4}, 2e-4),
        ({"rule": "power", "value": 1e-3, "ref_n": 5312, "exponent": 0.5}, 1e-3),
    ],
)
def test_lr_rules_resolve_in_N(synth_manifest, rule, expected):
    assert keyed(synth_manifest, lr=rule).loop.lr == pytest.approx(expected)


# What each image kind adds to a trial's identity, as recorded before the image settings were
# merged into one config (``bioscale.data.images.ImageConfig``): the same YAML must keep its keys.
_IMAGE_DEFAULT = {
    "bad_samples": "error",
    "crop": 64,
    "crops_per_site": 1,
    "decode_batch_size": 16,
    "decode_cpus": 0.5,
    "downsample": 1,
    "dyes": None,
    "max_skipped": 0.01,
    "normalise": "percentile",
}
_RELEASE_MAPS = {"blur": "release", "sigma_px": None}


@pytest.mark.parametrize(
    "kind, image, expected",
    [
        ("cellpainting", {}, {"image": _IMAGE_DEFAULT}),
        (
            "cellpainting",
            {"crop": 32, "normalise": "none", "crops_per_site": 2, "dyes": ["DNA", "ER"]},
            {
                "image": _IMAGE_DEFAULT
                | {"crop": 32, "normalise": "none", "crops_per_site": 2, "dyes": ["DNA", "ER"]}
            },
        ),
        ("natural", {}, {"image": _IMAGE_DEFAULT, "maps": _RELEASE_MAPS}),
        ("natural", {"crop": 32}, {"image": _IMAGE_DEFAULT | {"crop": 32}, "maps": _RELEASE_MAPS}),
    ],
)
def test_image_settings_enter_trial_keys_as_they_always_did(kind, image, expected):
    from bioscale.data import kinds
    from bioscale.study.spec import DataSpec

    data = StudySpec.from_dict(
        {**STUDY, "data": {"kind": kind, "manifest": "m.parquet", "image": image}}
    ).data
    assert isinstance(data, DataSpec)
    assert kinds.get(kind).identity(data) == expected
