"""Fit and predict time of every classifier at ImageNet scale, against the machine's FLOP rate.

Data: :func:`sklearn_cmm.protocol.synthetic.synthetic_problem`, CLIP-like embeddings with a
modality gap (images and texts in two cones ~70 degrees apart, raw image norms ~10, a text
projection with spread singular values): 1000 classes x 16 shots for training, 50,000 test
queries, embedding dimension 512 and 1024.

For each method the table gives fit and predict time, an analytic FLOP count of what the
implementation computes (dense matrix products only; element-wise work is not counted),
the achieved rate and its share of the measured matrix-product rate of the same precision
(float64 for the numpy closed forms and predictions; float32 for training, for
SeMoBridge's closed form, whose bulk is a product with the float32 features, and for the
linear probe, which scikit-learn runs in float32 on float32 features).
SeMoBridge-T's 5000 steps are timed in full on a GPU; on a CPU ``--sbt-steps`` steps are
timed and the 5000-step time extrapolated (marked ``*``). Predictions run in batches of
5000 queries (Tip-Adapter's kernel on 50,000 x 16,000 shots would take 6.4 GB at once).

Targets (checked and printed): closed forms (zero-shot, Tip-Adapter, CMM's closed form,
SeMoBridge) fit in < 2 s on the CPU; CMM's refinement (its default number of steps) < 30 s on
the CPU; SeMoBridge-T (5000 steps) < 10 s on one H100/H200.

A second table shows how fit time grows with classes, shots and dimension (3 sizes each;
refinement and SeMoBridge-T per step).

Usage::

    python benchmarks/bench_scale.py                 # CPU, ~6 min on 2 cores
    python benchmarks/bench_scale.py --quick         # small sizes, ~1 min
    python benchmarks/bench_scale.py --device cuda   # GPU section of the same JSON
    python benchmarks/bench_scale.py --device cuda --matmul-precision high   # TF32

Results go to ``benchmarks/results/bench_scale.json`` (``--out``), one section per
device kind: a GPU run adds its section and keeps the CPU one. ``--matmul-precision``
sets :func:`torch.set_float32_matmul_precision` for the run (the package never changes
it: a user's process decides), and a run at another precision than ``"highest"`` (torch's
default) writes its own section (``cuda_high``): on a GPU ``"high"`` lets float32
products use TF32 tensor cores, whose accuracy the section's ``accuracy`` columns show
beside the ``cuda`` section's.
"""

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from sklearn_cmm._math.semobridge_loss import RESHAPE_MIN_CLASSES
from sklearn_cmm.cmm import CROSS_FIT_FOLDS
from sklearn_cmm.protocol.methods import make_classifier
from sklearn_cmm.protocol.synthetic import synthetic_problem

OUT = Path(__file__).resolve().parent / "results" / "bench_scale.json"
PREDICT_BATCH = 5000
SBT_STEPS = 5000
CLOSED_FORMS = ("zero-shot", "tip-adapter", "cmm-closed-form", "semobridge")
FLOAT32_FITS = ("semobridge", "cmm-refinement", "semobridge-t", "linear-probe")

# name -> (method, parameters); the names of the tables. The blend searches are off: this
# times the fits themselves (bench_search.py times the searches against them).
CONFIGS = {
    "zero-shot": ("zero-shot", {}),
    "tip-adapter": ("tip-adapter", {"search": None}),
    "cmm-closed-form": ("cmm", {"max_iter": 0}),
    "semobridge": ("semobridge", {"search": None}),
    "cmm-refinement": ("cmm", {}),  # its default refinement (L-BFGS)
    "semobridge-t": ("semobridge-t", {"search": None}),
    "linear-probe": ("linear-probe", {"C": 10.0, "max_iter": 100}),
}


# --------------------------------------------------------------------- FLOP counts


def fit_flops(name, N, C, d, w, steps=0, n_iter=0):
    """Dense matrix-product FLOPs of a fit (N shots, C classes, dim d, text width w)."""
    if name in ("zero-shot", "tip-adapter"):
        return 0.0
    # At the defaults (image_weight="auto", calibration) the map is fitted, then refitted
    # CROSS_FIT_FOLDS times on all shots but a fold. V'V of the shots (counted as a
    # general product; numpy computes it with syrk, half the work, so the share of peak
    # can pass 100%), and each refit's as it less its held-out rows' (the folds' rows: the
    # shots once more); per fit S'T with S the class sums, LU and d solves
    fits = 1 + CROSS_FIT_FOLDS
    closed_cmm = 2 * (2 * N) * d * d + fits * (2 * C * d * d + 8 / 3 * d**3)
    if name == "cmm-closed-form":
        return closed_cmm
    if name == "cmm-refinement":  # forward V W, cos to T; backward the same twice, on the
        # shots and each refit's (CROSS_FIT_FOLDS times the shots in all; every refit
        # counted with the final fit's steps: only its count is known)
        trained = CROSS_FIT_FOLDS * N
        return closed_cmm + steps * (4 * trained * d * d + 4 * trained * C * d)
    pinv = 2 * w * d * d + 9 * d**3 + 4 * w * d * d  # W'W, eigh (~9 d^3), V diag (W V)'
    # tokens of the shots (float32 for float32 features), bridged class means, class weights
    closed_sb = pinv + 2 * N * w * d + 2 * C * w * d + 2 * C * C * d
    if name == "semobridge":
        return closed_sb
    if name == "semobridge-t":  # SeMoBridgeTLoss.value_and_grad, class sums projected
        # the shots' tokens, their projection with the class sums, and both transposed;
        # img and consistency scores and their two products back; txtp and txte and back;
        # the class sums and the bias's gradient as one-hot products below
        # RESHAPE_MIN_CLASSES (balanced classes here), sums over reshaped shots above
        step = (4 * N * w * d + 4 * (N + C) * w * d + 10 * N * C * d + 4 * C * C * (d + w)
                + (4 * N * C * w if C < RESHAPE_MIN_CLASSES else 0))
        return closed_sb + steps * step
    if name == "linear-probe":  # logits and gradient per L-BFGS iteration (a lower bound)
        return n_iter * 4 * N * C * d
    raise ValueError(name)


def predict_flops(name, Q, N, C, d, w):
    """Dense matrix-product FLOPs of predicting Q queries."""
    return {
        "zero-shot": 2 * Q * C * d,
        "tip-adapter": 2 * Q * C * d + 2 * Q * N * d + 2 * Q * N * C,  # one-hot as a matrix
        "cmm-closed-form": 2 * Q * d * d + 4 * Q * C * d,
        "cmm-refinement": 2 * Q * d * d + 4 * Q * C * d,
        "semobridge": 4 * Q * w * d + 6 * Q * C * d,
        "semobridge-t": 4 * Q * w * d + 6 * Q * C * d,
        "linear-probe": 2 * Q * C * d,
    }[name]


# ------------------------------------------------------------------------ measures


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rates(device, n=4096, repeats=3):
    """Best-of-``repeats`` GFLOP/s of an n x n product: torch float32 on ``device``, numpy float64."""
    rates = {}
    a = torch.randn(n, n, device=device)
    torch.mm(a, a)
    _sync(device)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, a)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    rates["torch_float32"] = 2 * n**3 / best / 1e9
    b = np.random.default_rng(0).standard_normal((n, n))
    b @ b
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        b @ b
        best = min(best, time.perf_counter() - start)
    rates["numpy_float64"] = 2 * n**3 / best / 1e9
    return rates


def _predict(clf, X):
    return np.concatenate([clf.predict(X[i : i + PREDICT_BATCH])
                           for i in range(0, len(X), PREDICT_BATCH)])


def time_method(name, problem, device, steps=None, predict=True):
    """Fit (and predict) one configuration; returns a dict of measures."""
    method, params = CONFIGS[name]
    params = dict(params)
    if name == "semobridge-t" and steps is not None:
        params.update(max_iter=steps, warmup_iter=min(500, steps // 10))
    if name == "cmm-refinement" and steps is not None:
        params["max_iter"] = steps
    text = {k: problem[k] for k in ("text_features", "text_projection")}
    clf = make_classifier(method, **text, random_state=0, device=str(device), **params)
    X, y = problem["train_features"], problem["train_labels"]
    _sync(device)
    start = time.perf_counter()
    clf.fit(X, y)
    _sync(device)
    out = {"fit_s": time.perf_counter() - start, "params": params}
    if hasattr(clf, "n_iter_"):
        out["n_iter"] = int(np.max(clf.n_iter_))
    elif hasattr(clf, "steps"):
        out["n_iter"] = int(np.max(clf[-1].n_iter_))
    if predict:
        start = time.perf_counter()
        pred = _predict(clf, problem["test_features"])
        out["predict_s"] = time.perf_counter() - start
        out["accuracy"] = float(np.mean(pred == problem["test_labels"]))
    return out


def _shape(problem):
    N, d = problem["train_features"].shape
    return N, len(problem["text_features"]), d, problem["text_projection"].shape[0]


def main_table(device, dims, n_classes, n_shots, n_queries, sbt_steps, rates, log):
    rows = []
    for dim in dims:
        problem = synthetic_problem(n_classes, n_shots, n_queries // n_classes, dim)
        N, C, d, w = _shape(problem)
        Q = len(problem["test_labels"])
        for name in CONFIGS:
            if device.type == "cuda" and name not in ("cmm-refinement", "semobridge-t"):
                continue  # the others run in numpy on the CPU whatever the device
            steps = None
            if name == "semobridge-t" and device.type != "cuda":
                steps = sbt_steps
            m = time_method(name, problem, device, steps=steps)
            fit_steps = m.get("n_iter", 0)
            if name == "semobridge-t":
                if steps is not None:  # per-step time from a short run, extrapolated
                    closed = time_method("semobridge", problem, device, predict=False)
                    per_step = max(m["fit_s"] - closed["fit_s"], 0) / steps
                    m["fit_measured_s"], m["steps_measured"] = m["fit_s"], steps
                    m["fit_s"] = closed["fit_s"] + SBT_STEPS * per_step
                    m["extrapolated"] = True
                fit_steps = SBT_STEPS
            flops_fit = fit_flops(name, N, C, d, w, steps=fit_steps, n_iter=m.get("n_iter", 0))
            flops_pred = predict_flops(name, Q, N, C, d, w)
            # Training runs in torch float32; SeMoBridge's closed form is dominated by the
            # shots' float32 product (the features are float32); the others are float64.
            peak_fit = rates["torch_float32"] if name in FLOAT32_FITS else rates["numpy_float64"]
            m.update(
                method=name, dim=d, n_classes=C, n_train=N, n_queries=Q,
                fit_gflop=flops_fit / 1e9, predict_gflop=flops_pred / 1e9,
                fit_gflops_per_s=flops_fit / m["fit_s"] / 1e9 if flops_fit else None,
                predict_gflops_per_s=flops_pred / m["predict_s"] / 1e9,
            )
            m["fit_share_of_peak"] = (m["fit_gflops_per_s"] / peak_fit
                                      if m["fit_gflops_per_s"] else None)
            peak_predict = rates["torch_float32" if name == "linear-probe" else "numpy_float64"]
            m["predict_share_of_peak"] = m["predict_gflops_per_s"] / peak_predict
            m["target"], m["target_met"] = _target(name, m["fit_s"], device)
            rows.append(m)
            log(_row_text(m))
    return rows


def _target(name, seconds, device):
    if device.type == "cpu" and name in CLOSED_FORMS:
        return "fit < 2 s (CPU)", seconds < 2
    if device.type == "cpu" and name == "cmm-refinement":
        return "fit < 30 s (CPU)", seconds < 30
    if device.type == "cuda" and name == "semobridge-t":
        return "fit < 10 s (H100/H200)", seconds < 10
    return None, None


def _row_text(m):
    fit = f"{m['fit_s']:.2f}{'*' if m.get('extrapolated') else ''}"
    rate = "-" if m["fit_gflops_per_s"] is None else (
        f"{m['fit_gflops_per_s']:.1f} ({100 * m['fit_share_of_peak']:.0f}%)")
    target = "" if m["target"] is None else (
        f"{m['target']}: {'met' if m['target_met'] else 'NOT met'}")
    return (f"{m['method']:<16}{m['dim']:>5}{fit:>10}{rate:>16}{m['predict_s']:>10.2f}"
            f"{m['predict_gflops_per_s']:>9.1f} ({100 * m['predict_share_of_peak']:.0f}%)"
            f"{100 * m['accuracy']:>8.1f}  {target}")


HEADER = (f"{'method':<16}{'dim':>5}{'fit s':>10}{'fit GFLOP/s':>16}{'pred s':>10}"
          f"{'pred GFLOP/s':>16}{'acc %':>8}  target")


def scaling_table(device, sizes, n_queries, steps, log):
    """Fit time (closed forms) and time per step (trained) over 3 sizes of each factor."""
    base_c, base_s, base_d = sizes["classes"][-1], sizes["shots"][-1], sizes["dim"][1]
    configs = ([("classes", c, c, base_s, base_d) for c in sizes["classes"]]
               + [("shots", s, base_c, s, base_d) for s in sizes["shots"]]
               + [("dim", d, base_c, base_s, d) for d in sizes["dim"]])
    names = [n for n in CONFIGS if n != "linear-probe"]
    rows = []
    log(f"{'factor':<8}{'value':>6}" + "".join(f"{n:>17}" for n in names))
    cache = {}
    for factor, value, C, S, d in configs:
        key = (C, S, d)
        if key not in cache:
            problem = synthetic_problem(C, S, max(1, n_queries // C), d)
            row = {}
            closed = {}
            for name in names:
                if name in ("cmm-refinement", "semobridge-t"):
                    m = time_method(name, problem, device, steps=steps, predict=False)
                    base = closed["cmm-closed-form" if name == "cmm-refinement" else "semobridge"]
                    row[name] = max(m["fit_s"] - base, 0) / steps  # seconds per step
                else:
                    closed[name] = row[name] = time_method(name, problem, device,
                                                           predict=False)["fit_s"]
            cache[key] = row
        rows.append({"factor": factor, "value": value, "n_classes": C, "shots": S,
                     "dim": d, "fit_s": cache[key]})
        log(f"{factor:<8}{value:>6}" + "".join(
            f"{cache[key][n]:>16.3f}{'/' if n in ('cmm-refinement', 'semobridge-t') else 's'}"
            for n in names))
    log("(s: fit seconds; /: seconds per training step)")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (development)")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="BLAS and torch threads (default: all cores)")
    parser.add_argument("--sbt-steps", type=int, default=None,
                        help="SeMoBridge-T steps timed on a CPU (default 10; 3 with --quick)")
    parser.add_argument("--matmul-precision", default="highest",
                        choices=("highest", "high", "medium"),
                        help="torch.set_float32_matmul_precision for the run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from sklearn_cmm._torch import resolve_device

    torch.set_float32_matmul_precision(args.matmul_precision)

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    if args.quick:
        dims, n_classes, n_shots, n_queries = (128, 256), 200, 8, 5000
        sizes = {"classes": [50, 100, 200], "shots": [2, 4, 8], "dim": [64, 128, 256]}
        sbt_steps, scale_steps = args.sbt_steps or 3, 2
    else:
        dims, n_classes, n_shots, n_queries = (512, 1024), 1000, 16, 50_000
        sizes = {"classes": [250, 500, 1000], "shots": [4, 8, 16], "dim": [256, 512, 1024]}
        sbt_steps, scale_steps = args.sbt_steps or 10, 3

    start = time.perf_counter()
    warm = synthetic_problem(5, 2, 1, 16)  # first calls pay torch's and BLAS's start-up
    for name in CONFIGS:
        time_method(name, warm, device, steps=2)
    rates = matmul_rates(device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    name = torch.cuda.get_device_name(device) if kind == "cuda" else platform.processor() \
        or platform.machine()
    print(f"bench_scale on {name} ({kind}, {args.threads} threads): matmul "
          f"torch float32 {rates['torch_float32']:.1f} GFLOP/s, numpy float64 "
          f"{rates['numpy_float64']:.1f} GFLOP/s")
    print(f"\n{n_classes} classes x {n_shots} shots, {n_queries} queries; GFLOP/s in "
          "parentheses: share of the matmul rate (float32 torch for training, float64 numpy "
          "otherwise); * = extrapolated from a short run\n")
    print(HEADER)
    rows = main_table(device, dims, n_classes, n_shots, n_queries, sbt_steps, rates, print)
    print("\nHow fit time grows (other factors at the largest classes/shots, middle dim):\n")
    scaling = scaling_table(device, sizes, min(n_queries, 5000), scale_steps, print)
    elapsed = time.perf_counter() - start

    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    section = "quick_" + kind if args.quick else kind
    if args.matmul_precision != "highest":
        section += "_" + args.matmul_precision
    record[section] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": name, "threads": args.threads, "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "numpy": np.__version__, "matmul_gflops": rates,
        "float32_matmul_precision": args.matmul_precision,
        "sizes": {"n_classes": n_classes, "shots": n_shots, "n_queries": n_queries,
                  "dims": list(dims), "scaling": sizes},
        "main": rows, "scaling": scaling, "elapsed_s": elapsed,
    }
    record.setdefault("cuda", None)  # filled by a run with --device cuda on a GPU
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str))
    print(f"\nDone in {elapsed:.0f} s; wrote section {section!r} of {args.out}")


if __name__ == "__main__":
    main()
