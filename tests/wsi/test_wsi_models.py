"""WSI models: forward/loss/backward, DAS-MIL's distillation, and training through the shared
scaffold on synthetic slides whose signal exists only at the finest scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from tests.conftest import history
from workflow.common.errors import InputError
from workflow.common.target import RunTarget
from workflow.common.training import TrainSettings, fit
from workflow.wsi.graph import ScaleFeatures, build_graph, save_graph
from workflow.wsi.mil import distillation_terms
from workflow.wsi.models import MODELS, build_model, model_defaults
from workflow.wsi.train import GraphDataModule, WSIModule, load_module, train_experiment

DIM = 32
SMALL = {"hidden": 16, "q_dim": 8, "attention_dim": 8}
QUIET = {"enable_model_summary": False}


def synthetic_slide(rng: np.random.Generator, label: int, slide_id: str, amplitude: float = 5.0):
    """x5 / x10 / x20 tiles of a random tissue shape with pure-noise features; a positive
    slide has a few x20 tiles shifted along one direction. x5 and x10 features are drawn
    independently of the x20 ones, so the label is invisible at the coarser scales."""
    direction = np.random.default_rng(0).normal(size=DIM)
    direction /= np.linalg.norm(direction)
    coarse = np.array([(x, y) for x in range(3) for y in range(3)])
    coarse = coarse[rng.random(len(coarse)) < 0.7]
    if len(coarse) == 0:
        coarse = np.array([[1, 1]])
    cells, parents = [coarse], [np.full(len(coarse), -1)]
    for _ in range(2):
        above = cells[-1]
        kids = np.array(
            [(2 * x + dx, 2 * y + dy) for x, y in above for dx in (0, 1) for dy in (0, 1)]
        )
        parent = np.repeat(np.arange(len(above)), 4)
        keep = rng.random(len(kids)) < 0.85
        keep[0] = True  # never empty
        cells.append(kids[keep])
        parents.append(parent[keep])
    scales = []
    for i, (c, p) in enumerate(zip(cells, parents, strict=True)):
        downsample = 2.0 ** (3 - i)
        features = rng.normal(size=(len(c), DIM)).astype(np.float32)
        if i == 2 and label:
            hit = rng.choice(len(c), size=min(3, len(c)), replace=False)
            features[hit] += amplitude * direction.astype(np.float32)
        scales.append(
            ScaleFeatures(features, c * int(256 * downsample), p, downsample, 256, f"x{5 * 2**i}")
        )
    return build_graph(scales, label, slide_id)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Graphs of ~100 nodes gain nothing from intra-op threads, and on a shared machine
    spinning threads make these tests several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def slides():
    """40 train + 20 validation slides, then 100 held-out test slides (never saved)."""
    rng = np.random.default_rng(7)
    return [synthetic_slide(rng, i % 2, f"slide{i:03d}") for i in range(160)]


@pytest.fixture(scope="module")
def slide_files(slides, tmp_path_factory):
    out = tmp_path_factory.mktemp("graphs")
    files = []
    for g in slides[:60]:
        save_graph(g, out / f"{g.slide_id}.pt")
        files.append(out / f"{g.slide_id}.pt")
    return {"train": files[:40], "val": files[40:60]}


@pytest.mark.parametrize(
    "settings",
    [
        {"model": "dasmil"},
        {"model": "dasmil", "gnn": "gcn", "node_dropout": 0.3, "predict": "mean"},
        {"model": "dasmil", "scales": [0, 2], "child_pool": "max", "predict": "student"},
        {"model": "abmil", "scale": 0},
        {"model": "dsmil", "scale": -1},
        {"model": "meanpool", "scale": 1},
        {"model": "maxpool"},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_forward_loss_backward(settings, slides):
    torch.manual_seed(0)
    graph = slides[1]
    model = build_model({**SMALL, **settings}, DIM).train()
    out = model(graph)
    assert out["bag_logit"].shape == () and torch.isfinite(out["bag_logit"])
    scale = settings.get("scale", -1) if settings["model"] != "dasmil" else -1
    level = scale % 3
    assert torch.equal(out["nodes"], (graph.level == level).nonzero().view(-1))
    assert out["attention"].shape == out["instance_logits"].shape == out["nodes"].shape
    assert torch.isclose(out["attention"].sum(), torch.tensor(1.0), atol=1e-5)
    terms = model.loss(out, graph)
    assert terms["loss"].shape == () and torch.isfinite(terms["loss"]) and terms["loss"] > 0
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


def test_dasmil_maps_each_x20_node_to_its_x10_parent(slides):
    graph = slides[2]
    model = build_model({**SMALL, "model": "dasmil"}, DIM).eval()
    out = model(graph)
    assert (out["parent"] >= 0).all()  # every synthetic x20 tile has its x10 parent
    assert torch.equal(out["student_nodes"][out["parent"]], graph.child_of[out["nodes"]])
    assert torch.equal(out["student_nodes"], (graph.level == 1).nonzero().view(-1))


def test_build_model_rejects_unknown_names_and_bad_settings():
    with pytest.raises(ValueError, match="unknown wsi model"):
        build_model({"model": "transmil"}, DIM)
    with pytest.raises(ValueError, match="two scales"):
        build_model({"model": "dasmil", "scales": [-1]}, DIM)
    with pytest.raises(ValueError, match="gat or gcn"):
        build_model({"model": "dasmil", "gnn": "sage"}, DIM)
    assert model_defaults("dasmil")["temperature"] == 1.5 and set(MODELS) >= {"abmil", "maxpool"}


def test_distillation_is_zero_only_when_the_student_matches_the_teacher():
    torch.manual_seed(1)
    teacher = torch.randn(10)
    parent = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, -1])  # student 3 has no child
    means = torch.stack([teacher[parent == i].mean() for i in range(3)])
    student = torch.cat([means, torch.tensor([5.0])])
    bag = torch.tensor(0.7)
    mse, kl = distillation_terms(student, teacher, parent, bag.clone(), bag, 1.5)
    assert mse.item() == pytest.approx(0.0, abs=1e-12) and kl.item() == pytest.approx(0.0, abs=1e-7)
    shifted = student.clone()
    shifted[1] += 0.5
    mse2, _ = distillation_terms(shifted, teacher, parent, bag, bag, 1.5)
    assert mse2.item() == pytest.approx(0.25 / 3)  # mean over the 3 students with children
    _, kl2 = distillation_terms(student, teacher, parent, torch.tensor(-1.0), bag, 1.5)
    _, kl_hot = distillation_terms(student, teacher, parent, torch.tensor(-1.0), bag, 0.5)
    assert 0 < kl2.item() < kl_hot.item()  # a higher temperature softens the bag targets
    maxes = torch.stack([teacher[parent == i].max() for i in range(3)])
    mse_max, _ = distillation_terms(
        torch.cat([maxes, torch.zeros(1)]), teacher, parent, bag, bag, pool="max"
    )
    assert mse_max.item() == pytest.approx(0.0, abs=1e-12)


def test_distillation_sends_no_gradient_to_the_teacher(slides):
    torch.manual_seed(2)
    graph = slides[3]
    model = build_model({**SMALL, "model": "dasmil", "dropout": 0.0}, DIM).train()
    out = model(graph)
    terms = model.loss(out, graph)
    assert terms["mse"] > 0 and terms["kl"] > 0
    (terms["mse"] + terms["kl"]).backward()
    teacher = [p.grad for p in model.teacher.parameters()]
    assert all(g is None or g.abs().sum() == 0 for g in teacher)
    assert any(
        g is not None and g.abs().sum() > 0 for g in (p.grad for p in model.student.parameters())
    )
    # and the teacher's gradient from the full loss equals the one without distillation
    full = {}
    for distill in (True, False):
        model.zero_grad()
        model.settings["distill"] = distill
        model.loss(model(graph), graph)["loss"].backward()
        full[distill] = [p.grad.clone() for p in model.teacher.parameters()]
    assert all(torch.allclose(a, b) for a, b in zip(full[True], full[False], strict=True))


def slide_auc(checkpoint, slides) -> float:
    module = load_module(checkpoint)
    with torch.no_grad():
        probs = torch.stack([torch.sigmoid(module(g)["bag_logit"]) for g in slides])
    labels = torch.tensor([int(g.y) for g in slides])
    return float(binary_auroc(probs, labels))


def train(settings, files, run_dir, epochs):
    torch.manual_seed(0)  # initial weights: fit() seeds only after the module exists
    module = WSIModule(settings, DIM)
    data = GraphDataModule(files["train"], files["val"], cache=True)
    return fit(
        module,
        data,
        TrainSettings(
            run_dir=run_dir,
            max_epochs=epochs,
            seed=0,
            monitor="val_auc",
            mode="max",
            trainer_overrides=QUIET,
        ),
    )


TRAIN = {"lr": 1e-3, "weight_decay": 0.0, "lr_min": 1e-4, "hidden": 32, "q_dim": 16}


def test_dasmil_finds_the_x20_signal_that_the_coarse_scale_cannot_see(
    slides, slide_files, tmp_path
):
    dasmil = train({**TRAIN, "model": "dasmil"}, slide_files, tmp_path / "dasmil", 12)
    coarse = train({**TRAIN, "model": "abmil", "scale": 0}, slide_files, tmp_path / "x5", 12)
    val = {r: max(h["val_auc"] for h in history(r)) for r in (tmp_path / "dasmil", tmp_path / "x5")}
    auc = slide_auc(dasmil.best_checkpoint, slides[60:])
    auc_coarse = slide_auc(coarse.best_checkpoint, slides[60:])
    print(
        f"AUC val (selection) / test: dasmil {val[tmp_path / 'dasmil']:.3f} / {auc:.3f}, "
        f"x5-only abmil {val[tmp_path / 'x5']:.3f} / {auc_coarse:.3f}"
    )
    assert val[tmp_path / "dasmil"] >= 0.9 and auc >= 0.9
    # 100 test slides: chance AUC has sd ~0.06, so 0.2 is > 3 sd
    assert abs(auc_coarse - 0.5) <= 0.2
    assert {"val_auc", "val_loss", "train_mse", "train_kl"} <= set(history(tmp_path / "dasmil")[-1])


def test_a_continued_fit_resumes_from_last_checkpoint(slides, slide_files, tmp_path):
    files = {"train": slide_files["train"][:4], "val": slide_files["val"][:4]}
    settings = {**TRAIN, "model": "maxpool", "monitor": "val_loss"}
    final = tmp_path / "final.ckpt"

    def run(epochs):
        return train_experiment(
            {**settings, "max_epochs": epochs},
            files["train"],
            files["val"],
            RunTarget(tmp_path / "run", final),
            trainer_overrides=QUIET,
        )

    assert run(2).resumed_from_epoch is None
    assert run(4).resumed_from_epoch == 1
    assert [h["epoch"] for h in history(tmp_path / "run")] == [0, 1, 2, 3]
    module = load_module(final)
    assert torch.load(final, weights_only=False)["run_info"]["resumed_from_epoch"] == 1
    out = module.predict_step(slides[0], 0)
    assert out["slide_id"] == "slide000" and 0 <= out["probability"] <= 1
    assert torch.equal(out["nodes"], (slides[0].level == 2).nonzero().view(-1))


def test_missing_graph_files_fail_with_input_errors(slide_files, tmp_path):
    data = GraphDataModule([tmp_path / "gone.pt"], slide_files["val"][:1])
    data.setup()
    with pytest.raises(InputError, match="graph file not found"):
        next(iter(data.train_dataloader()))
    with pytest.raises(InputError, match="train and val"):
        GraphDataModule([], slide_files["val"])
    with pytest.raises(InputError, match="checkpoint not found"):
        load_module(tmp_path / "none.ckpt")
