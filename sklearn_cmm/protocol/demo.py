"""Compare every method on the bundled CLIP model and Fashion-MNIST images, offline.

First fits the one-line pipeline ``make_clip_pipeline(CLIPFeaturizer(...),
CrossModalMappingClassifier())`` on raw images with string labels. Then embeds the
bundled held-out images once with :class:`~sklearn_cmm.CLIPFeaturizer` and, for every
number of shots and seed, draws the few-shot training set with
:class:`~sklearn_cmm.model_selection.FewShotSplit`, fits each method through
:func:`~sklearn.model_selection.cross_validate` and scores top-1 on all remaining images.
Every method runs at its defaults (Tip-Adapter's and SeMoBridge's blend weights are chosen
by their default ``search="cv"``, on the training shots alone).
Prints a table (mean ± std over seeds), writes it as CSV and JSON, and plots accuracy
against shots.
"""

import time

import numpy as np

from .report import (
    UsageError,
    available_device,
    int_list,
    limit_threads,
    mean_std,
    method_list,
    positive_int,
    run_environment,
    writable_dir,
    write_json,
)

DEFAULT_SHOTS = "1,2,4,8,16"
DEFAULT_SEEDS = "1,2,3"
#: Methods of the demo, in the table's order (names of :mod:`sklearn_cmm.protocol.methods`).
DEMO_METHODS = "zero-shot,linear-probe,tip-adapter,tip-adapter-f,cmm,semobridge,semobridge-t"


def add_arguments(parser):
    """Options of ``sklearn-cmm demo``."""
    parser.add_argument("--shots", type=int_list, default=int_list(DEFAULT_SHOTS),
                        help=f"comma-separated shots per class (default {DEFAULT_SHOTS})")
    parser.add_argument("--seeds", type=int_list, default=int_list(DEFAULT_SEEDS),
                        help=f"comma-separated seeds (default {DEFAULT_SEEDS})")
    parser.add_argument("--methods", type=method_list, default=DEMO_METHODS,
                        help="comma-separated methods (default "
                        f"{DEMO_METHODS.replace(',', ', ')})")
    parser.add_argument("--out", type=writable_dir, default="sklearn-cmm-demo",
                        help="folder for results.csv, results.json and accuracy_vs_shots.png")
    parser.add_argument("--device", type=available_device, default="auto",
                        help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="limit BLAS and torch CPU threads (default: each fit and the "
                        "featurizer size their own, one thread at the demo's sizes)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _check_shots(shots_list, y):
    """Every number of shots must leave each class an image to test (FewShotSplit's rule)."""
    smallest = int(np.bincount(y).min())
    too_many = [s for s in shots_list if s >= smallest]
    if too_many:
        raise UsageError(
            f"--shots {','.join(map(str, too_many))}: at most {smallest - 1} shots a class, "
            f"the smallest class of the demo's images has {smallest}")


def _pipeline_check(data, device, verbose):
    """The one-liner on raw images and string labels: text comes from the same model."""
    from .. import CLIPFeaturizer, CrossModalMappingClassifier, make_clip_pipeline
    from ..bundled import BUNDLED_MODEL
    from ..model_selection import draw_shots

    labels = np.asarray(data.target_names)[data.target]
    train, test = draw_shots(labels, 16, random_state=0)
    pipeline = make_clip_pipeline(
        CLIPFeaturizer(BUNDLED_MODEL, pretrained="bundled", device=device, verbose=verbose),
        CrossModalMappingClassifier(templates=data.templates, device=device, random_state=0),
    )
    pipeline.fit(data.images[train], labels[train])
    return pipeline.score(data.images[test], labels[test])


def _evaluate(features, y, class_text, methods, shots_list, seeds, device, verbose):
    """One row per (method, shots, seed): accuracy, fit time, modality gap before/after."""
    from sklearn.model_selection import cross_validate
    from tqdm.auto import tqdm

    from .methods import make_classifier
    from ..metrics import modality_gap
    from ..model_selection import FewShotSplit

    prototypes = class_text.prototypes
    rows = []
    runs = [(s, seed, m) for s in shots_list for seed in seeds for m in methods]
    for shots, seed, method in tqdm(runs, desc="demo", disable=not verbose):
        estimator = make_classifier(
            method,
            text_features=prototypes,
            text_projection=class_text.text_projection,
            random_state=seed,
            device=device,
        )
        result = cross_validate(
            estimator, features, y, cv=FewShotSplit(shots, n_splits=1, random_state=seed),
            return_estimator=True, return_indices=True,
        )
        fitted, test = result["estimator"][0], result["indices"]["test"][0]
        gap_after = None
        if hasattr(fitted, "transform"):  # CMM and SeMoBridge map images into text space
            gap_after = modality_gap(fitted.transform(features[test]), prototypes)
        rows.append({
            "method": method, "shots": shots, "seed": seed,
            "accuracy": float(result["test_score"][0]),
            "fit_time_s": float(result["fit_time"][0]),
            "gap_before": modality_gap(features[test], prototypes), "gap_after": gap_after,
        })
    return rows


def _summary(rows, methods, shots_list):
    """Mean and std of accuracy per (method, shots), plus per-method fit time and gaps."""
    accuracy = mean_std(rows, ("method", "shots"))
    top = [r for r in rows if r["shots"] == max(shots_list)]
    gap_before = mean_std(top, ("method",), "gap_before")
    gap_after = mean_std([r for r in top if r["gap_after"] is not None], ("method",), "gap_after")
    fit_time = mean_std(rows, ("method",), "fit_time_s")
    return [
        {
            "method": method,
            "accuracy": {s: accuracy[method, s][0] for s in shots_list},
            "std": {s: accuracy[method, s][1] for s in shots_list},
            "fit_time_s": fit_time[(method,)][0],
            "gap_before": gap_before[(method,)][0],
            "gap_after": gap_after[(method,)][0] if (method,) in gap_after else None,
        }
        for method in methods
    ]


def format_table(summary, shots_list):
    """The demo's table as text: top-1 % (mean ± std), gain over zero-shot, time, gap."""
    top = max(shots_list)
    baseline = next((e for e in summary if e["method"] == "zero-shot"), None)
    header = (
        f"{'method':<14}"
        + "".join(f"{str(s) + '-shot':>15}" for s in shots_list)
        + f"{'vs zero-shot @' + str(top):>17}{'fit s':>8}{'gap before':>12}{'gap after':>11}"
    )
    lines = [header, "-" * len(header)]
    for e in summary:
        cells = "".join(
            f"{100 * e['accuracy'][s]:>8.2f} ± {100 * e['std'][s]:<4.2f}" for s in shots_list
        )
        gain = (
            f"{100 * (e['accuracy'][top] - baseline['accuracy'][top]):>+17.2f}"
            if baseline else f"{'':>17}"
        )
        after = f"{e['gap_after']:>11.3f}" if e["gap_after"] is not None else f"{'-':>11}"
        lines.append(
            f"{e['method']:<14}{cells}{gain}{e['fit_time_s']:>8.2f}{e['gap_before']:>12.3f}{after}"
        )
    return "\n".join(lines)


def _plot(summary, shots_list, path, n_seeds):
    """Accuracy against shots, one line per method; the legend sits right of the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for e in summary:
        mean = np.array([100 * e["accuracy"][s] for s in shots_list])
        std = np.array([100 * e["std"][s] for s in shots_list])
        style = "--" if e["method"] == "zero-shot" else "-o"
        ax.plot(shots_list, mean, style, label=e["method"], markersize=4)
        ax.fill_between(shots_list, mean - std, mean + std, alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots_list, [str(s) for s in shots_list])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("sklearn-cmm demo: bundled tiny CLIP on Fashion-MNIST")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
              title=f"mean of {n_seeds} seeds;\nbands: ± std over seeds", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args):
    """Run the demo; returns 0 on success (the process exit status)."""
    import pandas as pd

    from .. import CLIPFeaturizer, __version__
    from ..bundled import BUNDLED_MODEL, load_fashion_mnist_sample
    from ..text import class_text_features

    limit_threads(args.threads)
    verbose = not args.quiet
    methods = args.methods
    start = time.perf_counter()
    data = load_fashion_mnist_sample()
    _check_shots(args.shots, data.target)
    print(f"sklearn-cmm {__version__} demo: {len(data.target)} held-out Fashion-MNIST images, "
          f"model {BUNDLED_MODEL!r}, methods {', '.join(methods)}")

    pipeline_accuracy = _pipeline_check(data, args.device, verbose)
    print(f"make_clip_pipeline(CLIPFeaturizer(...), CrossModalMappingClassifier()) on raw images, "
          f"16 shots: top-1 {100 * pipeline_accuracy:.2f}%")

    featurizer = CLIPFeaturizer(BUNDLED_MODEL, pretrained="bundled", device=args.device,
                                verbose=verbose)
    features = featurizer.fit_transform(data.images)
    class_text = class_text_features(
        np.arange(len(data.target_names)), features.shape[1],
        class_names=dict(enumerate(data.target_names)), templates=data.templates,
        text_encoder=featurizer.text_encoder(), with_projection=True,
    )
    rows = _evaluate(features, data.target, class_text, methods, args.shots, args.seeds,
                     args.device, verbose)
    summary = _summary(rows, methods, args.shots)
    table = format_table(summary, args.shots)
    elapsed = time.perf_counter() - start
    print(f"\nTop-1 accuracy (%) on held-out images, mean ± std over seeds {args.seeds}; "
          f"gap = modality_gap(test images, class text) at {max(args.shots)} shots\n")
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out / "results.csv", index=False)
    record = {
        **run_environment(),
        "model": BUNDLED_MODEL, "n_images": int(len(data.target)),
        "shots": args.shots, "seeds": args.seeds, "threads": args.threads,
        "elapsed_s": elapsed,
        "pipeline_check_accuracy": pipeline_accuracy,
        "summary": summary, "runs": rows, "table": table,
    }
    write_json(args.out / "results.json", record)
    _plot(summary, args.shots, args.out / "accuracy_vs_shots.png", len(args.seeds))
    print(f"\nWrote {args.out / 'results.csv'}, {args.out / 'results.json'} and "
          f"{args.out / 'accuracy_vs_shots.png'} in {elapsed:.0f} s.")
    return 0
