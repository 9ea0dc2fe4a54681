"""Threads sized to the work: the size rule at its threshold, set per fit and restored."""

import threading

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from sklearn_cmm import CrossModalMappingClassifier, SeMoBridgeClassifier, _threads
from sklearn_cmm._threads import WORK_PER_THREAD, sized_threads, threads_for


def blas_threads():
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.fixture
def four_cores(monkeypatch):
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)


def test_one_thread_below_twice_the_work_per_thread_then_one_per_unit(four_cores):
    assert threads_for(0) == 1
    assert threads_for(2 * WORK_PER_THREAD - 1) == 1
    assert threads_for(2 * WORK_PER_THREAD) == 2
    assert threads_for(3 * WORK_PER_THREAD - 1) == 2
    assert threads_for(4 * WORK_PER_THREAD) == 4
    assert threads_for(1e6 * WORK_PER_THREAD) == 4  # at most every core


def test_n_jobs_overrides_with_joblibs_meaning(four_cores):
    assert threads_for(1e6 * WORK_PER_THREAD, n_jobs=1) == 1
    assert threads_for(0, n_jobs=3) == 3
    assert threads_for(0, n_jobs=-1) == 4
    assert threads_for(0, n_jobs=-2) == 3
    assert threads_for(0, n_jobs=-10) == 1


def test_block_sets_both_and_restores_them_also_on_an_error():
    torch_before, blas_before = torch.get_num_threads(), blas_threads()
    with sized_threads(0, n_jobs=3) as n:
        assert n == 3 and torch.get_num_threads() == 3 and set(blas_threads()) == {3}
    assert torch.get_num_threads() == torch_before and blas_threads() == blas_before
    with pytest.raises(RuntimeError), sized_threads(0, n_jobs=3):
        raise RuntimeError
    assert torch.get_num_threads() == torch_before and blas_threads() == blas_before


def test_nested_and_concurrent_blocks_restore_the_first_values():
    before = torch.get_num_threads()
    with sized_threads(0, n_jobs=3):
        with sized_threads(0, n_jobs=1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3  # the outer block's count again
    assert torch.get_num_threads() == before
    # Two threads whose blocks overlap: whatever the order of exits, nothing leaks.
    inside, release = threading.Barrier(2), threading.Event()

    def fit_like(n):
        with sized_threads(0, n_jobs=n):
            inside.wait()
            release.wait()

    workers = [threading.Thread(target=fit_like, args=(n,)) for n in (1, 3)]
    for worker in workers:
        worker.start()
    release.set()
    for worker in workers:
        worker.join()
    assert torch.get_num_threads() == before and not _threads._requests


def _problem(seed=0, n_classes=5, dim=16, shots=6):
    rng = np.random.RandomState(seed)
    text = rng.randn(n_classes, dim)
    y = np.repeat(np.arange(n_classes), shots)
    X = text[y] + rng.randn(len(y), dim)
    W = np.linalg.qr(rng.randn(dim, dim))[0] * 2
    return X, y, text, W


def _estimators(text, W, n_jobs):
    common = dict(text_features=text, text_encoder=None, device="cpu", n_jobs=n_jobs)
    return [
        # Few steps: two threads on a busy machine are many times slower than one.
        CrossModalMappingClassifier(max_iter=5, **common),
        SeMoBridgeClassifier(text_projection=W, train=True, max_iter=10,
                             validation_interval=5, warmup_iter=2, learning_rate=1e-2,
                             random_state=0, **common),
    ]


def test_closed_forms_factor_with_numpys_lapack(monkeypatch):
    # numpy and scipy each load an OpenBLAS whose idle threads spin after a call: a scipy
    # factorisation among numpy's products waits on them (twice as long at 1024-d on 2
    # threads), so the closed forms solve and decompose with numpy
    import scipy.linalg

    def scipy_factorisation(*args, **kwargs):
        raise AssertionError("a closed form called scipy.linalg")

    for name in ("solve", "eigh", "svd", "cho_factor", "cho_solve", "lu_factor", "inv"):
        monkeypatch.setattr(scipy.linalg, name, scipy_factorisation)
    X, y, text, W = _problem()  # 30 shots in 16-d: the d x d system, and its refits'
    CrossModalMappingClassifier(text_features=text, text_encoder=None, max_iter=0).fit(X, y)
    SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None).fit(X, y)


def test_fits_set_the_sized_threads_and_restore_them(monkeypatch):
    X, y, text, W = _problem()
    seen = []
    original = _threads.sync_torch_threads

    def spy():
        original()
        seen.append(torch.get_num_threads())

    monkeypatch.setattr("sklearn_cmm._torch.sync_torch_threads", spy)
    before, blas_before = torch.get_num_threads(), blas_threads()
    for n_jobs, expected in [(None, 1), (2, 2)]:
        seen.clear()
        for estimator in _estimators(text, W, n_jobs):
            estimator.fit(X, y)
        assert seen and set(seen) == {expected}  # a small problem: one thread
        assert torch.get_num_threads() == before and blas_threads() == blas_before


def test_a_failed_fit_restores_the_threads():
    X, y, text, W = _problem()
    before, blas_before = torch.get_num_threads(), blas_threads()
    clf = SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None,
                               train=True, early_stopping=False, max_iter=30, warmup_iter=0,
                               learning_rate=1e6, device="cpu", n_jobs=3)
    with pytest.raises(ValueError, match="diverged"):
        clf.fit(X, y)
    assert torch.get_num_threads() == before and blas_threads() == blas_before


def test_numpy_training_runs_adamws_torch_kernel_on_one_thread(monkeypatch):
    """SeMoBridge-T on the CPU: numpy's BLAS keeps the fit's threads, torch's AdamW
    kernel gets one (two pools taking every core spin against each other), and the
    fit's count comes back after the training."""
    from sklearn_cmm import _torch

    X, y, text, W = _problem()
    seen = []
    original = _torch.FullBatchAdamW.step

    def step(optimizer, grads, lr):
        seen.append((torch.get_num_threads(), set(blas_threads())))
        original(optimizer, grads, lr)

    monkeypatch.setattr(_torch.FullBatchAdamW, "step", step)
    after_training = []
    monkeypatch.setattr("sklearn_cmm._semobridge_training.check_converged",
                        _recording(after_training))
    before, blas_before = torch.get_num_threads(), blas_threads()
    SeMoBridgeClassifier(text_features=text, text_projection=W, text_encoder=None,
                         train=True, early_stopping=False, max_iter=3, device="cpu",
                         n_jobs=2).fit(X, y)
    assert seen == [(1, {2})] * 3
    assert after_training == [2]  # the fit's threads again once the steps are done
    assert torch.get_num_threads() == before and blas_threads() == blas_before


def _recording(counts):
    from sklearn_cmm import _semobridge_training

    original = _semobridge_training.check_converged

    def check_converged(training):
        counts.append(torch.get_num_threads())
        return original(training)

    return check_converged


def test_results_do_not_depend_on_the_thread_count():
    X, y, text, W = _problem()
    for sized, fixed in zip(_estimators(text, W, None), _estimators(text, W, 2)):
        sized.fit(X, y)
        fixed.fit(X, y)
        np.testing.assert_allclose(sized.decision_function(X), fixed.decision_function(X),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sized.predict_proba(X), fixed.predict_proba(X),
                                   rtol=1e-5, atol=1e-5)


def test_featurizer_sizes_model_and_decode_threads_on_the_cpu(monkeypatch):
    from sklearn_cmm import CLIPFeaturizer
    from sklearn_cmm import featurizer as featurizer_module
    from sklearn_cmm._clip.model import LoadedModel
    from sklearn_cmm.bundled import BUNDLED_MODEL, load_fashion_mnist_sample

    images = load_fashion_mnist_sample().images[:6]
    seen, workers = [], []
    encode = LoadedModel.encode_images
    monkeypatch.setattr(LoadedModel, "encode_images", lambda self, batch, precision: (
        seen.append(torch.get_num_threads()), encode(self, batch, precision))[1])
    prepared = featurizer_module._prepared_batches
    monkeypatch.setattr("sklearn_cmm.featurizer._prepared_batches",
                        lambda *args, **kw: (workers.append(args[3]), prepared(*args, **kw))[1])
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    monkeypatch.setattr(featurizer_module, "available_cores", lambda: 4)
    before = torch.get_num_threads()
    featurizer = CLIPFeaturizer(BUNDLED_MODEL, pretrained="bundled", device="cpu",
                                batch_size=4).fit(None)
    reference = featurizer.transform(images)
    # a tiny model: one model thread, the other three cores decode
    assert set(seen) == {1} and workers == [3] and torch.get_num_threads() == before
    seen.clear()
    fixed = featurizer.set_params(n_jobs=2).transform(images)
    assert set(seen) == {2} and workers[-1] == 2 and torch.get_num_threads() == before
    np.testing.assert_allclose(fixed, reference, atol=1e-5)
