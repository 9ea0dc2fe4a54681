"""Shared fixtures: no network, a tiny CLIP model saved to disk, a folder of real JPEGs."""

from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch

from sklearn_cmm import CLIPFeaturizer

from ._tiny_clip import TINY_CONFIG, random_state_dict, write_config, write_jpegs


@pytest.fixture(scope="session", autouse=True)
def offline_hub():
    """Tests never download: the Hugging Face hub client is told it is offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every torch problem in the tests is tiny: more threads only add synchronisation,
    and spin-waiting when the machine is busy (several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip model: its registered config name and a saved checkpoint.

    Attributes: ``name`` (registered with ``open_clip.add_model_config``),
    ``config_path``, ``checkpoint`` (a ``.pt`` state dict), ``embed_dim``, ``image_size``.
    """
    folder = tmp_path_factory.mktemp("tiny_clip")
    name = "sklearn-cmm-test-tiny"
    config_path = write_config(folder / f"{name}.json")
    open_clip.add_model_config(config_path)
    checkpoint = folder / "tiny.pt"
    torch.save(random_state_dict(name), checkpoint)
    return SimpleNamespace(
        name=name,
        config_path=config_path,
        checkpoint=checkpoint,
        embed_dim=TINY_CONFIG["embed_dim"],
        image_size=TINY_CONFIG["vision_cfg"]["image_size"],
    )


@pytest.fixture(scope="session")
def image_files(tmp_path_factory):
    """12 real JPEG files, 6 crops of each sample photo; ``paths`` and string ``labels``."""
    folder = tmp_path_factory.mktemp("images")
    paths, labels = write_jpegs(folder, n_per_photo=6)
    return SimpleNamespace(folder=folder, paths=paths, labels=labels)


@pytest.fixture(scope="session")
def featurizer(tiny_clip):
    """The tiny model's featurizer by config path: worker processes have no registration
    of the test's model name (modules that need another featurizer override this)."""
    return CLIPFeaturizer(tiny_clip.config_path, pretrained=tiny_clip.checkpoint)


@pytest.fixture(scope="session")
def features(featurizer, image_files):
    """``featurizer``'s embeddings of ``image_files`` and their labels."""
    return featurizer.fit_transform(image_files.paths), np.asarray(image_files.labels)


@pytest.fixture(scope="session")
def dask_client():
    """A Dask client of a local cluster of 2 worker processes, 1 thread each."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(2, timeout=120)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs (its workers are processes)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
