"""The few-shot benchmark datasets in the layout of CoOp, Tip-Adapter, APE and SeMoBridge.

Facts (folder names, split files, prompt templates) follow CoOp's ``datasets/*.py`` and
its ``CUSTOM_TEMPLATES`` (Zhou et al., "Learning to Prompt for Vision-Language Models",
IJCV 2022; github.com/KaiyangZhou/CoOp). A dataset root holds one folder per dataset::

    ROOT/oxford_pets/images/...           + ROOT/oxford_pets/split_zhou_OxfordPets.json
    ROOT/fgvc_aircraft/images/...         + variants.txt, images_variant_{train,val,test}.txt
    ROOT/imagenet/images/{train,val}/<wnid>/...  + classnames.txt ("<wnid> <name>" lines)
    ROOT/imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/...  + classnames.txt

A ``split_zhou_*.json`` holds ``{"train": [[relative_path, label, classname], ...], "val":
..., "test": ...}`` with paths relative to the dataset's image folder.

:func:`read_split` turns any of these layouts into lists of ``(path, label)`` per split and
the class names, with labels and their order exactly as CoOp has them (the order of the
items matters: CoOp's few-shot draw walks the classes in order of first appearance).
ImageNet has no validation split (CoOp validates on the test set, a leak); the protocol
draws its validation shots from the ImageNet training images instead (see
:mod:`sklearn_cmm.protocol.sampling`). The four ImageNet variants are test-only and label
their images with ImageNet's 1000 class indices; ImageNet-A and -R cover 200 of them.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lies under the root and how to read it.

    Attributes
    ----------
    key : str
        Name on the command line and in feature file names (``oxford_pets``).
    name : str
        Column name in the published tables (``OxfordPets``); for the ImageNet variants,
        their usual names.
    coop_name : str
        CoOp's class name for it (the key of ``CUSTOM_TEMPLATES``).
    folder : str
        Folder under the dataset root (CoOp's ``dataset_dir``).
    image_dir : str
        Image folder inside ``folder``.
    layout : {"split_json", "fgvc", "imagenet", "imagenet_variant"}
        How the splits are stored.
    split_file : str or None
        The ``split_zhou_*.json`` file (``layout="split_json"``).
    template : str
        CoOp's hand-written prompt for the dataset.
    n_classes : int
        Number of classes.
    sizes : tuple of int
        Images in train / val / test (CoOp's Table; 0 where the split does not exist).
    test_only : bool
        The ImageNet variants: a test split only, evaluated with a model fit on ImageNet.
    """

    key: str
    name: str
    coop_name: str
    folder: str
    image_dir: str
    layout: str
    split_file: str | None
    template: str
    n_classes: int
    sizes: tuple
    test_only: bool = False


DATASETS = {
    spec.key: spec
    for spec in [
        DatasetSpec("imagenet", "ImageNet", "ImageNet", "imagenet", "images", "imagenet",
                    None, "a photo of a {}.", 1000, (1281167, 0, 50000)),
        DatasetSpec("caltech101", "Caltech101", "Caltech101", "caltech-101",
                    "101_ObjectCategories", "split_json", "split_zhou_Caltech101.json",
                    "a photo of a {}.", 100, (4128, 1649, 2465)),
        DatasetSpec("oxford_pets", "OxfordPets", "OxfordPets", "oxford_pets", "images",
                    "split_json", "split_zhou_OxfordPets.json",
                    "a photo of a {}, a type of pet.", 37, (2944, 736, 3669)),
        DatasetSpec("stanford_cars", "StanfordCars", "StanfordCars", "stanford_cars", "",
                    "split_json", "split_zhou_StanfordCars.json", "a photo of a {}.", 196,
                    (6509, 1635, 8041)),
        DatasetSpec("oxford_flowers", "Flowers102", "OxfordFlowers", "oxford_flowers", "jpg",
                    "split_json", "split_zhou_OxfordFlowers.json",
                    "a photo of a {}, a type of flower.", 102, (4093, 1633, 2463)),
        DatasetSpec("food101", "Food101", "Food101", "food-101", "images", "split_json",
                    "split_zhou_Food101.json", "a photo of {}, a type of food.", 101,
                    (50500, 20200, 30300)),
        DatasetSpec("fgvc_aircraft", "FGVCAircraft", "FGVCAircraft", "fgvc_aircraft", "images",
                    "fgvc", None, "a photo of a {}, a type of aircraft.", 100,
                    (3334, 3333, 3333)),
        DatasetSpec("sun397", "SUN397", "SUN397", "sun397", "SUN397", "split_json",
                    "split_zhou_SUN397.json", "a photo of a {}.", 397, (15880, 3970, 19850)),
        DatasetSpec("dtd", "DTD", "DescribableTextures", "dtd", "images", "split_json",
                    "split_zhou_DescribableTextures.json", "{} texture.", 47,
                    (2820, 1128, 1692)),
        DatasetSpec("eurosat", "EuroSAT", "EuroSAT", "eurosat", "2750", "split_json",
                    "split_zhou_EuroSAT.json", "a centered satellite photo of {}.", 10,
                    (13500, 5400, 8100)),
        DatasetSpec("ucf101", "UCF101", "UCF101", "ucf101", "UCF-101-midframes", "split_json",
                    "split_zhou_UCF101.json", "a photo of a person doing {}.", 101,
                    (7639, 1898, 3783)),
        DatasetSpec("imagenetv2", "ImageNet-V2", "ImageNetV2", "imagenetv2",
                    "imagenetv2-matched-frequency-format-val", "imagenet_variant", None,
                    "a photo of a {}.", 1000, (0, 0, 10000), test_only=True),
        DatasetSpec("imagenet_sketch", "ImageNet-Sketch", "ImageNetSketch", "imagenet-sketch",
                    "images", "imagenet_variant", None, "a photo of a {}.", 1000,
                    (0, 0, 50889), test_only=True),
        DatasetSpec("imagenet_a", "ImageNet-A", "ImageNetA", "imagenet-adversarial",
                    "imagenet-a", "imagenet_variant", None, "a photo of a {}.", 200,
                    (0, 0, 7500), test_only=True),
        DatasetSpec("imagenet_r", "ImageNet-R", "ImageNetR", "imagenet-rendition",
                    "imagenet-r", "imagenet_variant", None, "a photo of a {}.", 200,
                    (0, 0, 30000), test_only=True),
    ]
}

#: The 11 datasets of the few-shot tables, in the column order of the published tables.
FEW_SHOT_DATASETS = (
    "oxford_pets", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat", "stanford_cars",
    "food101", "sun397", "caltech101", "ucf101", "imagenet",
)
#: Test-only targets of the distribution-shift protocol (source: ImageNet).
SHIFT_DATASETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

SPLITS = ("train", "val", "test")


def get_spec(name):
    """The :class:`DatasetSpec` of a key, a published column name or CoOp's class name."""
    wanted = name.lower().replace("-", "_")
    for spec in DATASETS.values():
        aliases = {spec.key, spec.name.lower().replace("-", "_"), spec.coop_name.lower(),
                   spec.folder.lower().replace("-", "_")}
        if wanted in aliases:
            return spec
    raise ValueError(f"Unknown dataset {name!r}; known: {', '.join(DATASETS)}.")


def prompt_name(classname):
    """A class name as CoOp and Tip-Adapter put it into prompts: underscores become spaces."""
    return classname.replace("_", " ")


def _listdir(path):
    return sorted(entry for entry in os.listdir(path) if not entry.startswith("."))


def _images_in(folder):
    if not os.path.isdir(folder):
        return []
    return [name for name in _listdir(folder) if name.lower().endswith(IMAGE_EXTENSIONS)]


def _read_classnames(path):
    """CoOp's ``classnames.txt``: ``<folder> <readable name>`` per line, in label order."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            folder, _, name = line.strip().partition(" ")
            out[folder] = name
    return out


def _class_names_from_items(items, n_labels):
    names = [None] * n_labels
    for _, label, classname in items:
        names[label] = classname
    return names


def read_split(root, spec):
    """The image paths and labels of every split of a dataset, and its class names.

    Parameters
    ----------
    root : str or Path
        The dataset root (the folder holding ``oxford_pets/``, ``imagenet/``, ...).
    spec : DatasetSpec or str

    Returns
    -------
    splits : dict of str -> (list of Path, list of int)
        ``"train"``, ``"val"``, ``"test"``; a split the dataset lacks is empty.
    class_names : list of str
        Name of each label (as in the split file, underscores kept).
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    base = Path(root) / spec.folder
    image_dir = base / spec.image_dir
    if not base.is_dir():
        raise FileNotFoundError(f"{spec.name}: no folder {base}.")
    reader = {
        "split_json": _read_split_json,
        "fgvc": _read_fgvc,
        "imagenet": _read_imagenet,
        "imagenet_variant": _read_imagenet_variant,
    }[spec.layout]
    items, class_names = reader(base, image_dir, spec)
    splits = {
        split: ([image_dir / path for path, _, _ in items.get(split, [])],
                [int(label) for _, label, _ in items.get(split, [])])
        for split in SPLITS
    }
    return splits, class_names


def _read_split_json(base, image_dir, spec):
    path = base / spec.split_file
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec.name}: no split file {path}; get CoOp's split_zhou_*.json (see CoOp's "
            "DATASETS.md)."
        )
    split = json.loads(path.read_text())
    items = {name: [(p, int(label), c) for p, label, c in split.get(name, [])] for name in SPLITS}
    every = [item for name in SPLITS for item in items[name]]
    n_labels = max(label for _, label, _ in every) + 1
    return items, _class_names_from_items(every, n_labels)


def _read_fgvc(base, image_dir, spec):
    class_names = [line.strip() for line in (base / "variants.txt").read_text().splitlines()
                   if line.strip()]
    label_of = {name: i for i, name in enumerate(class_names)}
    items = {}
    for split in SPLITS:
        rows = []
        for line in (base / f"images_variant_{split}.txt").read_text().splitlines():
            if line.strip():
                image, _, name = line.strip().partition(" ")
                rows.append((image + ".jpg", label_of[name], name))
        items[split] = rows
    return items, class_names


def _class_folders(folder, names, classnames_file):
    """The class folders in ``folder`` (other files are left out), each a WordNet id of
    ``classnames.txt``."""
    folders = [f for f in _listdir(folder) if (folder / f).is_dir()]
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise ValueError(f"{folder}: {len(unknown)} folder(s) not in {classnames_file}, "
                         f"e.g. {unknown[0]!r}.")
    return folders


def _read_imagenet(base, image_dir, spec):
    names = _read_classnames(base / "classnames.txt")
    folders = _class_folders(image_dir / "train", names, base / "classnames.txt")
    class_names = [names[folder] for folder in folders]
    items = {"val": []}
    for split, sub in (("train", "train"), ("test", "val")):
        items[split] = [
            (f"{sub}/{folder}/{image}", label, class_names[label])
            for label, folder in enumerate(folders)
            for image in _images_in(image_dir / sub / folder)
        ]
    return items, class_names


def _read_imagenet_variant(base, image_dir, spec):
    names = _read_classnames(base / "classnames.txt")
    wnids = list(names)
    class_names = list(names.values())
    rows = []
    if spec.key == "imagenetv2":  # folders are the label indices 0..999
        for label in range(len(wnids)):
            if (image_dir / str(label)).is_dir():
                rows += [(f"{label}/{im}", label, class_names[label])
                         for im in _images_in(image_dir / str(label))]
    else:  # folders are WordNet ids; labels are ImageNet's (classnames.txt order)
        for folder in _class_folders(image_dir, names, base / "classnames.txt"):
            label = wnids.index(folder)
            rows += [(f"{folder}/{im}", label, class_names[label])
                     for im in _images_in(image_dir / folder)]
    return {"train": [], "val": [], "test": rows}, class_names
