"""Run the few-shot protocol on cached features and compare with the published numbers.

For every dataset file in FEATURES (written by ``extract-features``), number of shots and
seed: draw the few-shot training set as CoOp does (``n_shots`` random images a class, from
Python's ``random`` seeded with the seed) and the validation set (``min(n_shots, 4)`` a
class from the val split; from the remaining training images where there is no val split,
ImageNet); for every method, fit each candidate of its search space on the training shots
and keep the best on the validation shots (the test set is never used to choose); score
top-1 on the test split. Prints a table in the layout of the SeMoBridge paper's tables
(mean ± std over seeds per dataset and shots, their average, fit time) with the published
numbers of the same backbone and the difference, and writes results.csv (that layout),
comparison.csv, runs.csv and results.json.

``--distribution-shift`` runs the other protocol: fit on ImageNet, test on ImageNet and on
the ImageNet-V2 / -Sketch / -A / -R files found next to it (A and R: among their 200
classes).

Example: ``sklearn-cmm benchmark --features features/ --shots 1,2,4,8,16 --seeds 1,2,3``
"""

import argparse
import inspect
import json
import time

import numpy as np

from .datasets import FEW_SHOT_DATASETS, SHIFT_DATASETS, get_spec
from .report import (
    UsageError,
    available_device,
    existing_dir,
    hms,
    int_list,
    limit_threads,
    mean_std,
    method_list,
    positive_int,
    run_environment,
    writable_dir,
    write_json,
)

DEFAULT_METHODS = "zero-shot,tip-adapter,cmm,semobridge,semobridge-t,linear-probe"

#: Datasets on which SeMoBridge leaves CLIP's 7 templates out of its prompts.
_NO_CLIP_TEMPLATES = ("dtd", "eurosat", "oxford_flowers")


#: Prompt sets a feature file can hold (``--prompts`` joins them with ``+``).
_PROMPT_SETS = ("clip", "coop", "cupl")
#: Seconds a SeMoBridge-T step took on the development CPU (2 cores) at ImageNet scale,
#: 1000 classes x 16 shots, dimension 512 (``benchmarks/bench_scale.py``, 2026-11-23).
_SEMOBRIDGE_T_STEP_S = 1.5
#: Printed before the table of synthetic feature files (metadata ``"synthetic": true``).
_SYNTHETIC_NOTE = (
    "SYNTHETIC features (protocol/synthetic.py): the published numbers are real-image "
    "results, shown for the layout only; the rows marked 'difference*' compare nothing.")


def _override(text):
    """``cmm.max_iter=100`` -> ``("cmm", "max_iter", 100)``."""
    target, sep, value = text.partition("=")
    method, dot, param = target.partition(".")
    if not (sep and dot and method and param):
        raise argparse.ArgumentTypeError(f"expected METHOD.PARAM=VALUE; got {text!r}")
    method_list(method)  # a known method
    try:
        value = json.loads(value)
    except ValueError:
        pass  # a bare string
    return method, param, value


def _dataset_names(text):
    """``"dtd,eurosat"`` -> the datasets' keys."""
    try:
        return [get_spec(part.strip()).key for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).rstrip(".")) from None


def _prompts(text):
    """``ensemble``, ``semobridge`` or prompt sets joined by ``+``."""
    if text in ("ensemble", "semobridge"):
        return text
    unknown = [s for s in text.split("+") if s not in _PROMPT_SETS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected 'ensemble', 'semobridge' or sets among {', '.join(_PROMPT_SETS)} "
            f"joined by '+'; got {text!r}")
    return text


def add_arguments(parser):
    """Options of ``sklearn-cmm benchmark``."""
    parser.add_argument("--features", type=existing_dir, required=True,
                        help="folder of feature files written by extract-features")
    parser.add_argument("--methods", type=method_list, default=DEFAULT_METHODS,
                        help="comma-separated methods (default "
                        f"{DEFAULT_METHODS.replace(',', ', ')})")
    parser.add_argument("--shots", type=int_list, default=[1, 2, 4, 8, 16],
                        help="comma-separated shots per class (default 1,2,4,8,16)")
    parser.add_argument("--seeds", type=int_list, default=[1, 2, 3],
                        help="comma-separated seeds (default 1,2,3)")
    parser.add_argument("--datasets", type=_dataset_names, default=None,
                        help="comma-separated datasets (default: every file in --features)")
    parser.add_argument("--model", default=None,
                        help="use the files of this model when --features holds several")
    parser.add_argument("--pretrained", default=None,
                        help="use the files of these weights when --features holds several")
    parser.add_argument("--prompts", type=_prompts, default="ensemble",
                        help="text prototypes: 'ensemble' (every prompt set of the file), "
                        "'semobridge' (CoOp template + CuPL + CLIP templates except on DTD, "
                        "EuroSAT, Flowers), or sets joined by '+' (clip, coop, cupl)")
    parser.add_argument("--distribution-shift", action="store_true",
                        help="fit on ImageNet, test on its variants (files in --features)")
    parser.add_argument("--set", dest="overrides", type=_override, action="append",
                        default=[], metavar="METHOD.PARAM=VALUE",
                        help="set a parameter of a method in every search candidate that "
                        "does not set it itself, e.g. semobridge-t.max_iter=500 (repeatable)")
    parser.add_argument("--no-search", action="store_true",
                        help="fit each method's defaults only, no validation search")
    parser.add_argument("--device", type=available_device, default="auto",
                        help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="limit BLAS and torch CPU threads (on a busy machine 1 is "
                        "often fastest)")
    parser.add_argument("--out", type=writable_dir, default=None,
                        help="folder for the result files (default "
                        "FEATURES/benchmark/MODEL__WEIGHTS)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# ---------------------------------------------------------------------------- loading


def select_files(features_dir, datasets=None, model=None, pretrained=None):
    """``{dataset key: (path, metadata)}`` of the feature files of one (model, weights)."""
    from .features import list_feature_files

    files = list_feature_files(features_dir)
    if model is not None:
        files = [(p, m) for p, m in files if m["model"] == model]
    if pretrained is not None:
        files = [(p, m) for p, m in files if m["pretrained"] == pretrained]
    if datasets is not None:
        wanted = {get_spec(d).key for d in datasets}
        files = [(p, m) for p, m in files if m["dataset"] in wanted]
        missing = wanted - {m["dataset"] for _, m in files}
        if missing:
            raise FileNotFoundError(
                f"No feature file for {sorted(missing)} in {features_dir}.")
    weights = sorted({(m["model"], m["pretrained"]) for _, m in files})
    if not weights:
        raise FileNotFoundError(f"No matching feature file (*.npz) in {features_dir}.")
    if len(weights) > 1:
        raise ValueError(
            f"{features_dir} holds features of several models {weights}: choose one with "
            "--model / --pretrained.")
    return {m["dataset"]: (p, m) for p, m in files}, weights[0]


def select_text(data, prompts="ensemble"):
    """The text arrays for :func:`~sklearn_cmm.protocol.methods.make_classifier` from a file's data.

    ``prompts`` is ``"ensemble"`` (the file's combination of every prompt set),
    ``"semobridge"`` or prompt sets joined by ``+``; several sets are combined as in the
    file: the unit mean of their unit prototypes.
    """
    from .._math.basic import l2_normalize

    if prompts == "ensemble":
        sets = None
    elif prompts == "semobridge":
        sets = [s for s in ("coop", "cupl", "clip") if f"text_features_{s}" in data
                and not (s == "clip" and data["metadata"]["dataset"] in _NO_CLIP_TEMPLATES)]
    else:
        sets = prompts.split("+")
        missing = [s for s in sets if f"text_features_{s}" not in data]
        if missing:
            raise ValueError(f"{data['metadata']['dataset']}: no prompt set {missing} in "
                             "the feature file.")
    if sets is None:
        T = data["text_features"]
    else:
        T = l2_normalize(np.mean([data[f"text_features_{s}"] for s in sets], axis=0))
    return {"text_features": np.asarray(T, np.float64),
            "text_projection": np.asarray(data["text_projection"], np.float64)}


# --------------------------------------------------------------------------- protocol


def few_shot_indices(train_labels, val_labels, n_classes, n_shots, seed, dataset):
    """CoOp's draw of one run (:func:`~.sampling.coop_few_shot`), checked: every class
    has training shots and validation images (a class without either would fail a fit, or
    be judged on the other classes only). Returns ``(train, val, val_from_train)``."""
    from .sampling import coop_few_shot

    train, val, val_from_train = coop_few_shot(train_labels, val_labels, n_shots, seed)
    drawn = {"training shots": train_labels[train],
             "validation images": (train_labels if val_from_train else val_labels)[val]}
    for what, labels in drawn.items():
        missing = np.setdiff1d(np.arange(n_classes), labels)
        if len(missing) == 0:
            continue
        why = ("the train split has no image of them" if what == "training shots"
               else "the dataset has no val split, so its validation images are the "
               "training images not drawn as shots: use fewer --shots, or extract more "
               "training images a class (--max-train-per-class)" if val_from_train
               else "the val split has no image of them")
        raise ValueError(f"{dataset}, {n_shots} shots, seed {seed}: no {what} of "
                         f"{len(missing)} of the {n_classes} classes (label {missing[0]} "
                         f"first): {why}.")
    return train, val, val_from_train


def few_shot_sets(data, n_shots, seed):
    """``(X_train, y_train, X_val, y_val)`` of one run; the test split is not touched."""
    train, val, val_from_train = few_shot_indices(
        data["train_labels"], data["val_labels"], len(data["class_names"]), n_shots, seed,
        data["metadata"]["dataset"])
    source = "train" if val_from_train else "val"
    return (data["train_features"][train], data["train_labels"][train],
            data[f"{source}_features"][val], data[f"{source}_labels"][val])


def evaluate(data, methods, shots_list, seeds, *, prompts="ensemble", device="auto",
             overrides=None, search=True, targets=(), progress=None):
    """Run every (shots, seed, method) on one dataset; one dict per run.

    ``targets`` are extra test sets ``(name, X, y, classes or None)`` scored with the same
    fitted model (the distribution-shift protocol).
    """
    from .tuning import test_accuracy, tune_and_fit

    text = select_text(data, prompts)
    dataset = data["metadata"]["dataset"]
    rows = []
    for shots in shots_list:
        for seed in seeds:
            X_train, y_train, X_val, y_val = few_shot_sets(data, shots, seed)
            for method in methods:
                result = tune_and_fit(
                    method, X_train, y_train, X_val, y_val, text=text, seed=seed,
                    device=device, overrides=(overrides or {}).get(method), search=search)
                row = {
                    "dataset": dataset, "method": method, "shots": shots, "seed": seed,
                    "accuracy": test_accuracy(result.estimator, data["test_features"],
                                              data["test_labels"]),
                    "val_accuracy": result.val_accuracy, "params": result.params,
                    "fit_time_s": result.fit_time_s, "tuning_time_s": result.tuning_time_s,
                    "n_candidates": len(result.candidates),
                    "n_train": len(y_train), "n_val": len(y_val),
                }
                for name, X, y, classes in targets:
                    row[f"accuracy_{name}"] = test_accuracy(result.estimator, X, y, classes)
                rows.append(row)
                if progress is not None:
                    progress.update(1)
    return rows


# ---------------------------------------------------------------------------- summary


def summarize(rows, datasets, methods, shots_list, model):
    """Mean ± std (%) and fit time per (method, shots, dataset), with published numbers.

    Returns a list of dicts, one per (method, shots): ``cells`` maps each dataset to
    ``{"mean", "std", "fit_time_s", "published", "published_std", "diff"}``, plus the
    ``average`` over the datasets and its published counterpart (the published values
    averaged over the same datasets, when all of them have one).
    """
    from .published import published_result

    keys = ("method", "shots", "dataset")
    accuracy = mean_std(rows, keys)
    fit_time = mean_std(rows, keys, "fit_time_s")
    out = []
    for method in methods:
        for shots in shots_list:
            cells = {}
            for dataset in datasets:
                if (method, shots, dataset) not in accuracy:
                    continue
                mean, std, n_seeds = accuracy[method, shots, dataset]
                mean, std = 100 * mean, 100 * std
                pub = published_result(model, method, shots, get_spec(dataset).name)
                cells[dataset] = {
                    "mean": mean, "std": std,
                    "fit_time_s": fit_time[method, shots, dataset][0],
                    "n_seeds": n_seeds,
                    "published": None if pub is None else pub["mean"],
                    "published_std": None if pub is None else pub["std"],
                    "diff": None if pub is None else mean - pub["mean"],
                }
            if not cells:
                continue
            means = [c["mean"] for c in cells.values()]
            pubs = [c["published"] for c in cells.values()]
            average_pub = None if None in pubs else float(np.mean(pubs))
            out.append({
                "method": method, "shots": shots, "cells": cells,
                "average": float(np.mean(means)),
                "average_published": average_pub,
                "average_diff": None if average_pub is None
                else float(np.mean(means)) - average_pub,
                "fit_time_s": float(np.mean([c["fit_time_s"] for c in cells.values()])),
            })
    return out


def _ordered(datasets):
    order = list(FEW_SHOT_DATASETS) + list(SHIFT_DATASETS)
    return sorted(datasets, key=lambda d: order.index(d) if d in order else len(order))


def format_table(summary, datasets, title, synthetic=False):
    """The comparison table as text: ours, published and the difference per shots.

    ``synthetic`` marks the difference rows (``difference*``) and says why in the title.
    """
    from .methods import get_method

    names = [get_spec(d).name for d in datasets]
    width = max(13, *(len(n) + 1 for n in names))
    head = f"{'Method':<16}{'Shots':>5}  " + "".join(f"{n:>{width}}" for n in names)
    head += f"{'AVERAGE':>10}{'FIT TIME':>10}"
    if synthetic:
        title = f"{title}\n{_SYNTHETIC_NOTE}"
    difference = "  difference*" if synthetic else "  difference"
    lines = [title, "", head, "-" * len(head)]
    for method in dict.fromkeys(e["method"] for e in summary):
        label = get_method(method).label
        for entry in (e for e in summary if e["method"] == method):
            cells = entry["cells"]

            def cell(dataset, text):
                return f"{text(cells[dataset]) if dataset in cells else '':>{width}}"

            lines.append(
                f"{label:<16}{entry['shots']:>5}  "
                + "".join(cell(d, lambda c: f"{c['mean']:.2f}±{c['std']:.2f}") for d in datasets)
                + f"{entry['average']:>10.2f}{hms(entry['fit_time_s']):>10}")
            if any(c["published"] is not None for c in cells.values()):
                def pub(c):
                    if c["published"] is None:
                        return "-"
                    std = "" if c["published_std"] is None else f"±{c['published_std']:.2f}"
                    return f"{c['published']:.2f}{std}"

                average = entry["average_published"]
                lines.append(
                    f"{'  published':<16}{'':>5}  " + "".join(cell(d, pub) for d in datasets)
                    + (f"{average:>10.2f}" if average is not None else f"{'-':>10}"))
                lines.append(
                    f"{difference:<16}{'':>5}  "
                    + "".join(cell(d, lambda c: "-" if c["diff"] is None
                                   else f"{c['diff']:+.2f}") for d in datasets)
                    + (f"{entry['average_diff']:>+10.2f}" if average is not None
                       else f"{'-':>10}"))
        lines.append("")
    return "\n".join(lines)


def _results_csv(summary, datasets, model):
    """The summary in the layout of ``published/semobridge_*.csv``."""
    import csv
    import io

    from .methods import get_method
    from .published import BACKBONES

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Model", "Method", "Shots", *[get_spec(d).name for d in datasets],
                     "AVERAGE ACCURACY", "AVERAGE TRAINING TIME"])
    for i, entry in enumerate(summary):
        cells = entry["cells"]
        writer.writerow([
            BACKBONES.get(model, model) if i == 0 else "", get_method(entry["method"]).label,
            entry["shots"],
            *[f"{cells[d]['mean']:.2f}±{cells[d]['std']:.2f} {hms(cells[d]['fit_time_s'])}"
              if d in cells else "" for d in datasets],
            f"{entry['average']:.2f}", hms(entry["fit_time_s"]),
        ])
    return buffer.getvalue()


def _comparison_rows(summary):
    return [
        {"method": e["method"], "shots": e["shots"], "dataset": get_spec(d).name,
         "mean": c["mean"], "std": c["std"], "published": c["published"],
         "published_std": c["published_std"], "difference": c["diff"],
         "fit_time_s": c["fit_time_s"], "n_seeds": c["n_seeds"]}
        for e in summary for d, c in e["cells"].items()
    ]


# -------------------------------------------------------------------------------- run


def _load_targets(files, source):
    """The ImageNet variants as extra test sets ``(name, X, y, classes or None)``."""
    from .features import load_features

    targets = []
    for key in SHIFT_DATASETS:
        if key not in files:
            continue
        data = load_features(files[key])
        if data["class_names"] != source["class_names"]:
            raise ValueError(f"{key}: its class names differ from ImageNet's; both files "
                             "must come from CoOp's classnames.txt.")
        classes = np.unique(data["test_labels"])
        restrict = classes if len(classes) < len(source["class_names"]) else None
        targets.append((key, data["test_features"], data["test_labels"], restrict))
    return targets  # at least one: checked with the arguments


def _check_arguments(args):
    """Everything about the arguments that can fail, before any work.

    Returns ``(paths, metadata, datasets, model, pretrained, overrides, out)``; raises
    :class:`~sklearn_cmm.protocol.report.UsageError` with the problem in one line.
    """
    from .features import load_labels, model_tag
    from .methods import make_classifier

    # what the runner passes every estimator itself: the seed, --device, the file's text
    runner_sets = [name for name, p in inspect.signature(make_classifier).parameters.items()
                   if p.kind is p.KEYWORD_ONLY]
    overrides = {}
    for method, param, value in args.overrides:
        if param in runner_sets:
            raise UsageError(f"--set {method}.{param}: the runner sets {', '.join(runner_sets)} "
                             "itself (from --seeds, --device and the feature files)")
        overrides.setdefault(method, {})[param] = value
    for method, params in overrides.items():
        try:  # an unknown parameter or a wrong value fails here, not at the first fit
            estimator = make_classifier(method, **params)
            # a Pipeline (the linear probe) validates its steps' parameters only in fit
            for step in (estimator, *getattr(estimator, "named_steps", {}).values()):
                step._validate_params()
        except ValueError as error:  # sklearn's InvalidParameterError is a ValueError
            raise UsageError(f"--set: {error}") from None
    try:
        selected, (model, pretrained) = select_files(args.features, args.datasets,
                                                     args.model, args.pretrained)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    try:  # a given --out was checked when parsed; by default one folder a model
        out = args.out or writable_dir(args.features / "benchmark" /
                                       model_tag(model, pretrained))
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"--out: {error}") from None
    if args.distribution_shift:
        if "imagenet" not in selected or not any(key in selected for key in SHIFT_DATASETS):
            raise UsageError(f"--distribution-shift needs the features of ImageNet and of at "
                             f"least one of its variants ({', '.join(SHIFT_DATASETS)}) in "
                             f"{args.features} (and in --datasets, if given).")
        datasets = ["imagenet"]
    else:
        datasets = _ordered(k for k in selected if not get_spec(k).test_only)
        if not datasets:
            raise UsageError(f"No few-shot dataset file in {args.features}.")
    paths = {key: path for key, (path, _) in selected.items()}
    metadata = {key: meta for key, (_, meta) in selected.items()}
    for dataset in datasets:  # a draw that fails fails now, not after hours of fits
        train_labels, val_labels = load_labels(paths[dataset])
        for shots in args.shots:
            for seed in args.seeds:
                try:
                    few_shot_indices(train_labels, val_labels, metadata[dataset]["n_classes"],
                                     shots, seed, dataset)
                except ValueError as error:
                    raise UsageError(str(error)) from None
    return paths, metadata, datasets, model, pretrained, overrides, out


def plan(metadata, datasets, methods, shots_list, seeds, overrides, search=True):
    """What a run will cost, as lines to print before it starts.

    Counts the fits (every validation candidate is one) and SeMoBridge-T's training
    steps, with the measured cost of a step on a CPU, and says how to shorten the run.
    """
    from .methods import make_classifier, search_space

    runs = len(datasets) * len(shots_list) * len(seeds)
    fits = {m: runs * (len(search_space(m)) if search else 1) for m in methods}
    largest = max(datasets, key=lambda d: metadata[d]["n_classes"])
    lines = [
        f"Plan: {len(datasets)} dataset(s) x {len(shots_list)} shot count(s) x "
        f"{len(seeds)} seed(s) x {len(methods)} method(s): {sum(fits.values())} fits "
        f"(each validation candidate is a fit; largest: {get_spec(largest).name}, "
        f"{metadata[largest]['n_classes']} classes, up to {max(shots_list)} shots a class)."
    ]
    if "semobridge-t" in methods:
        steps = make_classifier("semobridge-t", **overrides.get("semobridge-t", {})
                                ).get_params()["max_iter"]
        per_dataset = steps * fits["semobridge-t"] // len(datasets)
        large = [d for d in datasets if metadata[d]["n_classes"] >= 1000]
        lines.append(
            f"SeMoBridge-T trains {steps} steps a fit, {per_dataset * len(datasets):,} steps "
            f"in all. On a 2-core CPU a step at ImageNet scale (1000 classes x 16 shots, "
            f"dimension 512) took about {_SEMOBRIDGE_T_STEP_S} s "
            "(benchmarks/bench_scale.py)"
            + (f": the {len(large) * per_dataset:,} steps on datasets of 1000 classes would "
               f"take about {hms(len(large) * per_dataset * _SEMOBRIDGE_T_STEP_S)} (h:mm:ss)"
               if large else "")
            + ". Use a GPU, shorten it with --set semobridge-t.max_iter=500, or leave it "
            "out with --methods.")
    lines.append("Shorter runs: fewer --shots, --seeds or --datasets; --no-search fits "
                 "each method's defaults only.")
    return lines


def run(args):
    """Run the protocol, print the table, write the result files; returns 0."""
    from tqdm.auto import tqdm

    from .features import load_features

    files, metadata, datasets, model, pretrained, overrides, out = _check_arguments(args)
    limit_threads(args.threads)
    methods = args.methods
    synthetic = any(metadata[d].get("synthetic", False) for d in datasets)
    for line in plan(metadata, datasets, methods, args.shots, args.seeds, overrides,
                     search=not args.no_search):
        print(line)
    start = time.perf_counter()
    total = len(datasets) * len(args.shots) * len(args.seeds) * len(methods)
    rows = []
    with tqdm(total=total, desc="benchmark", unit="fit", disable=args.quiet) as progress:
        for dataset in datasets:
            data = load_features(files[dataset])
            targets = _load_targets(files, data) if args.distribution_shift else ()
            rows += evaluate(data, methods, args.shots, args.seeds, prompts=args.prompts,
                             device=args.device, overrides=overrides,
                             search=not args.no_search, targets=targets, progress=progress)
            del data

    seeds = ",".join(map(str, args.seeds))
    header = (f"{model} / {pretrained}: top-1 accuracy (%), mean±std over seeds {seeds}; "
              "FIT TIME = mean time of the chosen model's fit (tuning excluded)")
    if args.distribution_shift:
        names = ["imagenet"] + [t for t in SHIFT_DATASETS if any(f"accuracy_{t}" in r
                                                                for r in rows)]
        shift_rows = [{**r, "dataset": name, "accuracy": r[f"accuracy_{name}"]
                       if name != "imagenet" else r["accuracy"]}
                      for r in rows for name in names]
        summary = summarize(shift_rows, names, methods, args.shots, model=None)
        table = format_table(summary, names, "Distribution shift: fit on ImageNet, test "
                             "on its variants. " + header)
        datasets = names
    else:
        summary = summarize(rows, datasets, methods, args.shots, model)
        table = format_table(summary, datasets, header + "\npublished: SeMoBridge paper "
                             "tables for the same backbone; difference = ours - published",
                             synthetic=synthetic)
    elapsed = time.perf_counter() - start
    print(table)

    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    prefix = "shift_" if args.distribution_shift else ""
    (out / f"{prefix}results.csv").write_text(_results_csv(summary, datasets, model))
    pd.DataFrame(_comparison_rows(summary)).to_csv(out / f"{prefix}comparison.csv",
                                                   index=False)
    pd.DataFrame([{**r, "params": json.dumps(r["params"])} for r in rows]).to_csv(
        out / f"{prefix}runs.csv", index=False)
    record = {
        **run_environment(),
        "protocol": "distribution-shift" if args.distribution_shift else "few-shot",
        "features": str(args.features), "model": model, "pretrained": pretrained,
        "datasets": datasets, "methods": methods, "shots": args.shots, "seeds": args.seeds,
        "prompts": args.prompts, "search": not args.no_search, "overrides": overrides,
        "device": args.device, "threads": args.threads, "synthetic": synthetic,
        "elapsed_s": elapsed,
        "summary": summary, "runs": rows, "table": table,
    }
    write_json(out / f"{prefix}results.json", record)
    print(f"\n{len(rows)} runs in {elapsed:.1f} s; wrote {prefix}results.csv, "
          f"{prefix}comparison.csv, {prefix}runs.csv and {prefix}results.json to {out}")
    return 0
