"""sklearn_cmm.parallel: featurizing into Parquet shards on Dask and Ray, resumed after a failure."""

import os
import shutil

import numpy as np
import pytest
from sklearn.base import clone

from sklearn_cmm import CLIPFeaturizer
from sklearn_cmm.parallel import (
    _require,
    featurize_with_dask,
    featurize_with_ray,
    pending_shards,
    read_features,
)

pytest.importorskip("pyarrow")

ENGINES = {"dask": featurize_with_dask, "ray": featurize_with_ray}


@pytest.fixture(scope="module")
def featurizer(tiny_clip):
    # By config path: worker processes have no registration of the test's model name.
    return CLIPFeaturizer(tiny_clip.config_path, pretrained=tiny_clip.checkpoint, batch_size=4)


@pytest.fixture(params=["dask", pytest.param("ray", marks=pytest.mark.slow)])
def engine(request):
    request.getfixturevalue("dask_client" if request.param == "dask" else "ray_cluster")
    return ENGINES[request.param]


@pytest.fixture
def images(image_files, tmp_path):
    """A copy of the 12 JPEG files, as str paths, that a test may damage."""
    folder = tmp_path / "images"
    shutil.copytree(image_files.folder, folder)
    return [str(folder / os.path.basename(path)) for path in image_files.paths]


def test_features_equal_the_single_process_featurizer(engine, featurizer, images, tmp_path):
    written = engine(images, featurizer, tmp_path / "out", shard_size=4, verbose=False)
    assert [os.path.basename(file) for file in written] == [
        f"shard-00000{i}.parquet" for i in range(3)
    ]
    paths, X = read_features(tmp_path / "out")
    assert paths == images
    np.testing.assert_array_equal(X, featurizer.fit_transform(images))
    assert X.dtype == np.float32


def test_views_of_every_shard_are_those_of_the_single_process_featurizer(
        featurizer, images, tmp_path, dask_client):
    # each shard's fit_transform drew its views from the start of the seed's sequence:
    # image i of every shard got the same crop
    views = clone(featurizer).set_params(train_views=2, view_output="columns", random_state=0)
    featurize_with_dask(images, views, tmp_path, shard_size=4, verbose=False)
    _, X = read_features(tmp_path)
    np.testing.assert_allclose(X, views.fit_transform(images), atol=1e-6)


def test_a_failed_run_resumes_without_recomputing_written_shards(
    engine, featurizer, images, tmp_path
):
    out = tmp_path / "out"
    good = open(images[5], "rb").read()
    with open(images[5], "wb") as f:  # shard 1 of 3 cannot be read: the run fails
        f.write(b"not a JPEG")
    with pytest.raises(Exception, match="cannot|identify|read"):
        engine(images, featurizer, out, shard_size=4, verbose=False)
    before = {file.name: file.stat().st_mtime_ns for file in out.glob("*.parquet")}
    assert "shard-000001.parquet" not in before
    if engine is featurize_with_dask:  # the other shards are written before it raises
        assert set(before) == {"shard-000000.parquet", "shard-000002.parquet"}
    assert not list(out.glob("*.partial"))  # a failed shard leaves no half-written file
    with open(images[5], "wb") as f:
        f.write(good)
    written = engine(images, featurizer, out, shard_size=4, verbose=False)
    # The rerun writes exactly the shards that were missing and touches no other.
    assert {os.path.basename(file) for file in written} == (
        {f"shard-00000{i}.parquet" for i in range(3)} - before.keys()
    )
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before
    assert engine(images, featurizer, out, shard_size=4, verbose=False) == []
    paths, X = read_features(out)
    np.testing.assert_array_equal(X, featurizer.fit_transform(images))


def test_shards_of_other_inputs_are_an_error(featurizer, images, tmp_path, dask_client):
    featurize_with_dask(images[:4], featurizer, tmp_path, shard_size=4, verbose=False)
    assert pending_shards(images, tmp_path, 4) == (
        [(tmp_path / "shard-000001.parquet", images[4:8], 4),
         (tmp_path / "shard-000002.parquet", images[8:], 8)],
        3,
    )
    with pytest.raises(ValueError, match="holds other paths than shard 0"):
        pending_shards(images[1:], tmp_path, 4)
    with pytest.raises(ValueError, match="holds other paths"):
        pending_shards(images, tmp_path, 3)
    # a shorter list than the folder's: its shards match, the folder has one more
    featurize_with_dask(images[:8], featurizer, tmp_path, shard_size=4, verbose=False)
    with pytest.raises(ValueError, match="beyond the 1 of these inputs.*shard-000001"):
        featurize_with_dask(images[:4], featurizer, tmp_path, shard_size=4, verbose=False)
    # ... also past a gap, as a run on more inputs that was interrupted leaves
    featurize_with_dask(images, featurizer, tmp_path / "gap", shard_size=2, verbose=False)
    for index in (2, 3, 4):
        (tmp_path / "gap" / f"shard-00000{index}.parquet").unlink()
    with pytest.raises(ValueError, match="beyond the 3 of these inputs.*shard-000005"):
        pending_shards(images[:6], tmp_path / "gap", 2)
    for shard_size in (0, -1, 2.5):
        with pytest.raises(ValueError, match="shard_size must be a positive integer"):
            pending_shards(images, tmp_path, shard_size)


def test_missing_engine_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'sklearn-cmm\[ray\]'$"):
        _require("sklearn_cmm_no_such_module", "ray")
    with pytest.raises(ImportError, match=r"sklearn-cmm\[dask\]' or pip install 'sklearn-cmm\[ray"):
        _require("sklearn_cmm_no_such_module", "dask", "ray")
