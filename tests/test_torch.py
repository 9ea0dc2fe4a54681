"""The one training loop: the learning-rate schedule step by step, the losses it returns."""

import numpy as np
import pytest
import torch

from sklearn_cmm import _torch
from sklearn_cmm._device import check_device
from sklearn_cmm._torch import (ArrayBackend, FullBatchAdamW, autograd_value_and_grad,
                                minimize_full_batch, minimize_lbfgs, resolve_device,
                                stack_to_numpy)


def _recorded_learning_rates(monkeypatch, **kwargs):
    """Run the loop on a toy loss and record the learning rate of every AdamW step."""
    rates = []
    step = _torch.FullBatchAdamW.step

    def recording_step(self, grads, lr):
        rates.append(lr)
        return step(self, grads, lr)

    monkeypatch.setattr(_torch.FullBatchAdamW, "step", recording_step)
    w = torch.zeros(3, requires_grad=True)
    losses = minimize_full_batch(
        w, autograd_value_and_grad(w, lambda: ((w - 1.0) ** 2).sum()), **kwargs)
    return np.array(rates), losses, w


def test_warmup_rises_linearly_then_holds(monkeypatch):
    rates, _, _ = _recorded_learning_rates(
        monkeypatch, max_iter=8, learning_rate=1.0, warmup_iter=4, warmup_start_lr=0.2
    )
    # Step t < warmup_iter: start + (lr - start) * t / warmup_iter; from step 4 on: lr.
    expected = [0.2 + 0.8 * t / 4 for t in range(4)] + [1.0] * 4
    np.testing.assert_allclose(rates, expected)


def test_no_warmup_is_constant(monkeypatch):
    rates, _, _ = _recorded_learning_rates(monkeypatch, max_iter=3, learning_rate=0.5)
    np.testing.assert_allclose(rates, [0.5, 0.5, 0.5])


def test_cosine_schedule_follows_torchs_cosine_annealing(monkeypatch):
    rates, _, _ = _recorded_learning_rates(
        monkeypatch, max_iter=6, learning_rate=0.5, warmup_iter=2, warmup_start_lr=0.1,
        schedule="cosine",
    )
    # Warm-up as before, then CosineAnnealingLR(T_max=4) from 0.5, computed by torch.
    w = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=0.5)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    cosine = []
    for _ in range(4):
        cosine.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        annealing.step()
    np.testing.assert_allclose(rates, [0.1, 0.3, *cosine])
    assert rates[2] == 0.5 and 0 < rates[-1] < rates[-2]


def test_losses_are_the_loss_before_each_step(monkeypatch):
    _, losses, w = _recorded_learning_rates(monkeypatch, max_iter=5, learning_rate=0.1)
    assert losses.shape == (5,) and losses[0] == pytest.approx(3.0)  # at w = 0
    assert np.all(np.diff(losses) < 0)
    assert float(((w.detach() - 1) ** 2).sum()) < losses[-1]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_full_batch_adamw_follows_torchs_adamw(weight_decay):
    """Two arrays, a changing learning rate and gradient: bitwise torch's fused AdamW, on
    tensors and numpy arrays (updated in place), and its plain (unfused) step to float32
    rounding."""
    rng = np.random.default_rng(0)
    start = [torch.tensor(rng.standard_normal(shape), dtype=torch.float32)
             for shape in [(4, 3), (5,)]]
    ours = [t.clone() for t in start]
    ours_numpy = [t.numpy().copy() for t in start]
    fused, plain = ([t.clone().requires_grad_() for t in start] for _ in range(2))
    references = [torch.optim.AdamW(params, lr=1.0, weight_decay=weight_decay, **kind)
                  for params, kind in [(fused, {"fused": True}), (plain, {"foreach": False})]]
    optimizers = [FullBatchAdamW(params, weight_decay=weight_decay)
                  for params in (ours, ours_numpy)]
    for step, lr in enumerate([1e-3, 0.1, 0.05, 0.3, 0.3]):
        grads = [torch.tensor(rng.standard_normal(t.shape), dtype=torch.float32) * (step + 1)
                 for t in start]
        optimizers[0].step(grads, lr)
        optimizers[1].step([g.numpy() for g in grads], lr)
        for reference, params in zip(references, [fused, plain]):
            reference.param_groups[0]["lr"] = lr
            for p, g in zip(params, grads):
                p.grad = g.clone()
            reference.step()
    for a, a_numpy, b, c in zip(ours, ours_numpy, fused, plain):
        assert torch.equal(a, b.detach())
        torch.testing.assert_close(a, c.detach(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(a_numpy, b.detach().numpy())
    assert not torch.equal(ours[0], start[0])
    assert not np.array_equal(ours_numpy[0], start[0].numpy())


def test_zero_steps_leave_the_parameters():
    w = torch.ones(2, requires_grad=True)
    value_and_grad = autograd_value_and_grad(w, lambda: (w**2).sum())
    assert minimize_full_batch(w, value_and_grad, max_iter=0, learning_rate=1.0).size == 0
    assert torch.equal(w.detach(), torch.ones(2))


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:10",
                                    torch.device("cpu")])
def test_device_spellings_accepted(device):
    check_device(device)


@pytest.mark.parametrize("device", ["tpu", "meta", "cuda:", "cuda:01", "cuda:00", "CPU", "",
                                    0, None, torch.device("meta")])
def test_other_devices_are_refused_in_one_place(device):
    with pytest.raises(ValueError, match="is not supported; use 'auto'"):
        check_device(device)
    with pytest.raises(ValueError, match="is not supported"):
        resolve_device(device)


def test_cuda_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(_torch.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("xp", [np, torch])
def test_minimize_lbfgs_solves_a_quadratic(xp):
    """On tensors and on numpy arrays."""
    rng = np.random.RandomState(0)
    M = rng.randn(6, 6)
    A, b = M @ M.T + np.eye(6), rng.randn(6)
    solution = np.linalg.solve(A, b)
    if xp is torch:
        A, b = torch.from_numpy(A), torch.from_numpy(b)
    x = xp.zeros(6, dtype=xp.float64)

    def value_and_grad():  # 0.5 x A x - b x
        return 0.5 * x @ A @ x - b @ x, A @ x - b

    losses, n_iter = minimize_lbfgs(x, value_and_grad, max_iter=50, tol=1e-12)
    np.testing.assert_allclose(np.asarray(x), solution, rtol=1e-5)
    assert 0 < n_iter <= 50 and losses[0] == 0.0 and len(losses) >= n_iter
    assert losses.dtype == np.float64 and losses[-1] < losses[0]


@pytest.mark.parametrize("loop", ["adamw", "lbfgs"])
def test_a_diverging_run_raises_instead_of_returning_nan(loop):
    w = torch.ones(2, requires_grad=True)

    def loss():  # unbounded below: the parameters run off to infinity
        return -(w**4).sum()

    value_and_grad = autograd_value_and_grad(w, loss)
    with pytest.raises(ValueError, match="diverged.*NaN or infinite"):
        if loop == "adamw":
            minimize_full_batch(w, value_and_grad, max_iter=5, learning_rate=1e30)
        else:
            minimize_lbfgs(w.detach(), value_and_grad, max_iter=50, tol=1e-9)


def test_lbfgs_line_search_tries_that_overflow_are_not_a_divergence():
    # a barrier that overflows to inf beyond x = 3.3: the first steps from x = -100 try
    # points there, which the line search rejects as too long
    x = np.full((1, 1), -100.0, dtype=np.float32)

    def value_and_grad():
        with np.errstate(over="ignore"):
            barrier = np.exp(50 * (x - 1.5))
        u = x - 1
        return (np.sum(np.sqrt(1 + u * u)) + np.sum(barrier),
                u / np.sqrt(1 + u * u) + 50 * barrier)

    losses, _ = minimize_lbfgs(x, value_and_grad, max_iter=100, tol=1e-6)
    assert np.isinf(losses).any()
    assert abs(x[0, 0] - 1) < 1e-3


@pytest.mark.parametrize("loop", ["adamw", "lbfgs"])
def test_numpy_arrays_train_on_one_torch_thread_silently(loop, recwarn):
    """A numpy run's torch kernels take one thread beside BLAS's (restored after), and a
    diverging numpy run raises at its end, not with overflow warnings on the way."""
    w = np.ones(2, dtype=np.float32)
    threads = []

    def value_and_grad():
        threads.append(torch.get_num_threads())
        return -(w**4).sum(), -4 * w**3

    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="diverged"):
            if loop == "adamw":
                minimize_full_batch(w, value_and_grad, max_iter=200, learning_rate=1e10)
            else:
                minimize_lbfgs(w, value_and_grad, max_iter=50, tol=1e-9)
        assert set(threads) == {1} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_array_backend_is_numpy_on_the_cpu_and_torch_elsewhere():
    assert ArrayBackend(torch.device("cpu")).xp is np
    assert ArrayBackend(torch.device("cuda")).xp is torch  # chosen by type, not opened
    source = np.arange(6.0).reshape(2, 3)
    source.setflags(write=False)  # read-only input: copied, never written
    for xp in (np, torch):
        backend = ArrayBackend(torch.device("cpu"), xp)
        array = backend.asarray(source)
        assert isinstance(array, np.ndarray if xp is np else torch.Tensor)
        assert str(array.dtype).endswith("float32")
        array[0, 0] = 99.0
        assert source[0, 0] == 0.0
        indices = backend.asindices(np.array([1, 0]))
        np.testing.assert_array_equal(np.asarray(array[indices]), [[3, 4, 5], [99, 1, 2]])
        losses = stack_to_numpy([array[0, 1], array[1, 2]])
        assert losses.dtype == np.float64 and losses.tolist() == [1.0, 5.0]


@pytest.mark.parametrize("max_iter", [1, 2, 4])
def test_lbfgs_takes_max_iter_iterations_when_each_search_takes_one_evaluation(max_iter):
    # on a quadratic with very different curvatures every line search accepts its first
    # step; the start's evaluation is not one of the budget's (with it, max_iter=1 ran no
    # iteration at all)
    x = np.array([[1.0, 1.0, 1.0]])
    curvature = np.array([[1.0, 3.0, 9.0]])

    def value_and_grad():
        return 0.5 * float(np.sum(curvature * x * x)), curvature * x

    losses, n_iter = minimize_lbfgs(x, value_and_grad, max_iter=max_iter, tol=1e-12)
    assert n_iter == max_iter and len(losses) == max_iter + 1 and losses[-1] < losses[0]
