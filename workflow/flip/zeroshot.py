"""Zero-shot classification and linear probing of a (FLIP) CLIP model.

Zero-shot: each class's text embedding is the mean over prompt templates of the normalised
embeddings of "a photo of a {class}." etc., renormalised (open_clip's
``build_zero_shot_classifier``); an image is assigned the class of highest cosine similarity.
Template sets: ``openai`` (CLIP's 80 ImageNet templates, as open_clip ships them), ``simple``
(open_clip's 7), ``own`` (8 of the 80, kept short for the demo).

Linear probe: a multinomial logistic regression (L2, L-BFGS, in torch: scikit-learn is not a
dependency) on frozen, normalised image features, standardised with the fitting set's
statistics. The L2 strength is swept over a log grid as CLIP's paper does, each strength fit
on a stratified part of the *train* features and scored on the held-out rest; the best is
refit on all train features and scored on val. Both run the model in eval mode, so all
patches are visible whatever the training mask.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import (
    IMAGENET_CLASSNAMES,
    OPENAI_IMAGENET_TEMPLATES,
    SIMPLE_IMAGENET_TEMPLATES,
)
from torch.utils.data import DataLoader

from workflow.common.errors import InputError
from workflow.flip.image_folder import read_classnames

log = logging.getLogger("lsai.flip.zeroshot")

#: A subset of the 80 OpenAI ImageNet templates (CLIP's notebook), kept short for the demo.
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "a cropped photo of the {}.",
    "itap of a {}.",
)
#: ``zeroshot.templates`` -> the prompt templates (format strings or open_clip's callables).
TEMPLATE_SETS: dict[str, Sequence[str | Callable[[str], str]]] = {
    "openai": OPENAI_IMAGENET_TEMPLATES,
    "simple": SIMPLE_IMAGENET_TEMPLATES,
    "own": TEMPLATES,
}


def template_set(name: str) -> Sequence[str | Callable[[str], str]]:
    """The templates of a ``zeroshot.templates`` name."""
    if name not in TEMPLATE_SETS:
        raise InputError(
            "zeroshot.templates", f"unknown set {name!r} (known: {list(TEMPLATE_SETS)})"
        )
    return TEMPLATE_SETS[name]


#: ImageNet-1k's first, second and last wnid in sorted order (classes 0, 1, 999: tench,
#: goldfish, toilet paper): the anchors by which the shipped names' order is checked.
IMAGENET_ANCHORS = {0: "n01440764", 1: "n01443537", 999: "n15075141"}
WNID = re.compile(r"n\d{8}")


def imagenet_classnames(classes: Sequence[str], where: str | PathLike[str]) -> list[str]:
    """open_clip's ``IMAGENET_CLASSNAMES`` for the class folders ``classes`` (sorted, as
    ImageFolder lists them): they must be ImageNet-1k's 1000 wnids, because the shipped names
    are in sorted-wnid order and carry no wnid to match them by."""
    if len(classes) != len(IMAGENET_CLASSNAMES):
        raise InputError(
            where,
            f"zeroshot.classnames openai_imagenet needs the {len(IMAGENET_CLASSNAMES)} ImageNet-1k "
            f"class folders named by wnid (n01440764 ... n15075141), found {len(classes)} "
            "(use classnames: file with a classnames.txt for other class sets)",
        )
    bad = [c for c in classes if not WNID.fullmatch(c)]
    wrong = {i: classes[i] for i, wnid in IMAGENET_ANCHORS.items() if classes[i] != wnid}
    if bad or wrong or list(classes) != sorted(classes):
        raise InputError(
            where,
            "zeroshot.classnames openai_imagenet needs the ImageNet-1k wnid folders in sorted "
            f"order (class 0 n01440764, 999 n15075141); found {bad[:3] or list(wrong.values())}",
        )
    return list(IMAGENET_CLASSNAMES)


def zeroshot_classnames(
    source: str, classes: Sequence[str], root: str | PathLike[str]
) -> list[str]:
    """The class names of ``zeroshot.classnames``: ``file`` - ``<root>/classnames.txt``, one a
    line in sorted-folder order; ``openai_imagenet`` - open_clip's ImageNet names."""
    if source == "openai_imagenet":
        return imagenet_classnames(classes, Path(root) / "val")
    if source != "file":
        raise InputError(
            "zeroshot.classnames", f"unknown source {source!r} (file, openai_imagenet)"
        )
    names = read_classnames(root)
    if len(names) != len(classes):
        raise InputError(
            Path(root) / "classnames.txt",
            f"{len(names)} class names for {len(classes)} class folders",
        )
    return names


@torch.no_grad()
def zero_shot_classifier(
    model: torch.nn.Module,
    tokenize: Callable[..., torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str | Callable[[str], str]] = TEMPLATES,
    classes_per_batch: int = 10,
) -> torch.Tensor:
    """[embed_dim, classes] on the model's device: per class the renormalised mean of its
    normalised prompt embeddings (open_clip's own builder, ``classes_per_batch`` at a time)."""
    model.eval()
    device = next(model.parameters()).device
    return build_zero_shot_classifier(
        model, tokenize, list(classnames), list(templates),
        num_classes_per_batch=classes_per_batch, device=device,
    )  # fmt: skip


@torch.no_grad()
def image_features(model: torch.nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised image features [N, D], labels [N]) of a loader of (images, labels)."""
    model.eval()
    device = next(model.parameters()).device
    features, labels = [], []
    for images, target in loader:
        features.append(F.normalize(model.encode_image(images.to(device)), dim=-1).float().cpu())
        labels.append(target)
    if not features:
        raise InputError("loader", "no images to evaluate")
    return torch.cat(features), torch.cat(labels)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list:
    """Fraction of rows whose label is among the top k logits (k capped at the classes)."""
    out = []
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out.append(float((top == labels[:, None]).any(dim=1).float().mean()))
    return out


@torch.no_grad()
def zero_shot_accuracy(
    model: torch.nn.Module, loader: DataLoader, classifier: torch.Tensor
) -> tuple[float, float]:
    """(top-1, top-5) of the zero-shot ``classifier`` on a loader of (images, labels)."""
    features, labels = image_features(model, loader)
    logits = features @ classifier.float().cpu()
    top1, top5 = topk_accuracy(logits, labels)
    return top1, top5


def probe_split(
    labels: Sequence[int] | torch.Tensor, train_fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified (probe-train, probe-test) indices of a labelled set: per
    class a seeded permutation, the first ``train_fraction`` (at least one, at most all but
    one when the class has two images or more) for training."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(len(idx) * train_fraction))
        n = min(max(n, 1), max(len(idx) - 1, 1))
        train += idx[:n].tolist()
        test += idx[n:].tolist()
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(test, dtype=int))


def l2_grid(low: float, high: float, steps: int) -> list[float]:
    """``steps`` L2 strengths spaced evenly in log scale from ``low`` to ``high``."""
    if not 0 < low <= high or steps < 1:
        raise InputError(
            "probe l2 grid", f"need 0 < min <= max and steps >= 1: {low}, {high}, {steps}"
        )
    return [float(v) for v in np.geomspace(low, high, steps)]


@dataclass
class Probe:
    """A fitted softmax regression on standardised features (its device and dtype)."""

    weight: torch.Tensor  # [D, C]
    bias: torch.Tensor  # [C]
    mean: torch.Tensor  # [D], of the fitting set
    std: torch.Tensor
    l2: float

    @torch.no_grad()
    def logits(self, features: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """[N, C] logits on the CPU, computed ``chunk`` rows at a time on the probe's device."""
        out = []
        for start in range(0, len(features), chunk):
            x = features[start : start + chunk].to(self.weight.device, self.weight.dtype)
            out.append((((x - self.mean) / self.std) @ self.weight + self.bias).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.weight.shape[1])

    def score(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) on a labelled set."""
        logits = self.logits(features)
        labels = labels.long().cpu()
        accuracy = float((logits.argmax(dim=1) == labels).double().mean())
        return accuracy, float(F.cross_entropy(logits.double(), labels))


def probe_device(device: torch.device | str | None = None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def fit_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    l2: float,
    classes: int,
    max_iter: int = 200,
    init: Probe | None = None,
    device: torch.device | str | None = None,
) -> Probe:
    """L2-regularised softmax regression (mean cross-entropy + ``l2`` x |W|^2, bias free) by
    full-batch L-BFGS on ``device`` (float64 on a CPU, float32 on a GPU: ImageNet's 1.28M x
    512 features and 1000-class logits fit an A100 in float32); ``init``: warm start."""
    if len(features) == 0:
        raise InputError("linear probe", "no features to fit")
    device = probe_device(device)
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    x = features.to(device, dtype)
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x = (x - mean) / std
    y = labels.to(device).long()
    if init is None:
        w = torch.zeros(x.shape[1], classes, dtype=dtype, device=device)
        b = torch.zeros(classes, dtype=dtype, device=device)
    else:
        w, b = (
            init.weight.detach().clone().to(device, dtype),
            init.bias.detach().clone().to(device, dtype),
        )
    w.requires_grad_(True)
    b.requires_grad_(True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Probe(w.detach(), b.detach(), mean, std, float(l2))


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
) -> float:
    """Test accuracy of one L2 strength fit on the train features (no sweep)."""
    if len(train_features) == 0 or len(test_features) == 0:
        raise InputError("linear probe", "empty probe-train or probe-test set")
    classes = int(max(int(train_labels.max()), int(test_labels.max())) + 1)
    probe = fit_probe(train_features, train_labels, weight_decay, classes, max_iter, device="cpu")
    return probe.score(test_features, test_labels)[0]


@dataclass
class Sweep:
    """The regularisation sweep: per strength (ascending) its held-out accuracy and loss."""

    grid: list[float]
    accuracy: list[float]
    loss: list[float]
    chosen: float
    fit_rows: int
    held_out_rows: int
    best: Probe | None = field(default=None, repr=False)


def sweep_l2(
    features: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float],
    classes: int,
    holdout: float = 0.1,
    seed: int = 0,
    max_iter: int = 200,
    device: torch.device | str | None = None,
) -> Sweep:
    """Fit every strength of ``grid`` on a stratified ``1 - holdout`` of the (train) features,
    score it on the held-out rest, choose the highest held-out accuracy (ties: the lower
    held-out loss, then the stronger regularisation). Strong to weak, each warm-started from
    the last, as a regularisation path."""
    fit_idx, held_idx = probe_split(labels, 1.0 - holdout, seed)
    if len(held_idx) == 0:
        raise InputError("linear probe", "no held-out train features to choose the L2 strength on "
                         "(every class needs 2 or more train images)")  # fmt: skip
    fit_x, fit_y = features[fit_idx], labels[fit_idx]
    held_x, held_y = features[held_idx], labels[held_idx]
    scores: dict[float, tuple[float, float]] = {}
    best: tuple[tuple[float, float], float, Probe] | None = None
    probe = None
    for l2 in sorted(set(map(float, grid)), reverse=True):
        probe = fit_probe(fit_x, fit_y, l2, classes, max_iter, init=probe, device=device)
        accuracy, loss = probe.score(held_x, held_y)
        scores[l2] = (accuracy, loss)
        log.info("probe sweep: l2 %.3g -> held-out top-1 %.4f, loss %.4f", l2, accuracy, loss)
        if best is None or (accuracy, -loss) > best[0]:
            best = ((accuracy, -loss), l2, probe)
    ascending = sorted(scores)
    return Sweep(
        grid=ascending,
        accuracy=[scores[v][0] for v in ascending],
        loss=[scores[v][1] for v in ascending],
        chosen=best[1],
        fit_rows=len(fit_idx),
        held_out_rows=len(held_idx),
        best=best[2],
    )
