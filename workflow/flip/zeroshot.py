"""Zero-shot classification and linear probing of a (FLIP) CLIP model.

Zero-shot: each class's text embedding is the mean over CLIP's prompt templates of the
normalised embeddings of "a photo of a {class}." etc., renormalised; an image is assigned the
class of highest cosine similarity. Linear probe: a multinomial logistic regression (L2,
L-BFGS, in torch: scikit-learn is not a dependency) on frozen, normalised image features.
Both run the model in eval mode, so all patches are visible whatever the training mask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from workflow.common.errors import InputError

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


@torch.no_grad()
def zero_shot_classifier(
    model: torch.nn.Module,
    tokenize: Callable[..., torch.Tensor],
    classnames: Sequence[str],
    templates: Sequence[str] = TEMPLATES,
) -> torch.Tensor:
    """[embed_dim, classes]: per class the renormalised mean of its normalised prompt
    embeddings."""
    model.eval()
    device = next(model.parameters()).device
    weights = []
    for name in classnames:
        tokens = tokenize([t.format(name) for t in templates]).to(device)
        embedding = F.normalize(model.encode_text(tokens), dim=-1).mean(dim=0)
        weights.append(F.normalize(embedding, dim=0))
    return torch.stack(weights, dim=1)


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


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    weight_decay: float = 1e-3,
    max_iter: int = 200,
) -> float:
    """Test accuracy of an L2-regularised softmax regression fit by L-BFGS on frozen
    features (standardised with the training set's statistics)."""
    if len(train_features) == 0 or len(test_features) == 0:
        raise InputError("linear probe", "empty probe-train or probe-test set")
    x, xt = train_features.double(), test_features.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x, xt = (x - mean) / std, (xt - mean) / std
    y = train_labels.long()
    classes = int(max(int(train_labels.max()), int(test_labels.max())) + 1)
    w = torch.zeros(x.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = (xt @ w + b).argmax(dim=1)
    return float((predicted == test_labels.long()).double().mean())
