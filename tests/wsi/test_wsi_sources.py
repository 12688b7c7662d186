"""Other inputs of the WSI track: TCGA labels from GDC manifests, released mil4wsi graphs."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import copy_repo, snakemake_in
from tests.wsi.conftest import save_as_mil4wsi, synthetic_slide_graph
from workflow.common.errors import InputError, Skips
from workflow.wsi.gdc import is_diagnostic, labels_from_manifests, patient_of, read_manifest
from workflow.wsi.labels import read_labels

ROOT = Path(__file__).resolve().parents[2]
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def tcga_name(tss: str, patient: int, slide: str = "DX1") -> str:
    return f"TCGA-{tss}-{patient:04d}-01Z-00-{slide}.{uuid.UUID(int=patient * 7 + len(slide))}.svs"


def gdc_download(root: Path, tss: str, patients: int, flat: bool = False) -> Path:
    """A gdc-client download folder (``<id>/<filename>``) and its manifest: two diagnostic
    slides for the first patient, one frozen section (TS1) for the second."""
    slides, lines = root / "slides", ["id\tfilename\tmd5\tsize\tstate"]
    names = [tcga_name(tss, p) for p in range(patients)]
    names += [tcga_name(tss, 0, "DX2"), tcga_name(tss, 1, "TS1")]
    for k, name in enumerate(names):
        file_id = f"{tss}-{k:04d}-{uuid.UUID(int=k)}"
        path = slides / name if flat else slides / file_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(100 + k))
        lines.append(f"{file_id}\t{name}\t{'0' * 32}\t{100 + k}\treleased")
    manifest = root / f"gdc_manifest_{tss}.txt"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture
def nsclc(tmp_path):
    return {"LUAD": gdc_download(tmp_path, "05", 10), "LUSC": gdc_download(tmp_path, "18", 10)}


def test_barcodes():
    name = "TCGA-05-4244-01Z-00-DX1.d4ff32cd-38cf-40ea-8213-45c2b100ac01.svs"
    assert patient_of(name) == "TCGA-05-4244" and is_diagnostic(name)
    assert not is_diagnostic(name.replace("DX1", "TS1"))
    assert patient_of("normal_001.tif") is None


def test_manifests_give_patient_level_labels(nsclc, tmp_path):
    rows = labels_from_manifests(nsclc, "LUSC", tmp_path / "slides", FRACTIONS, seed=3)
    table = pd.DataFrame(rows)
    assert len(table) == 2 * 11  # 10 patients + a second DX slide; the TS1 slide is left out
    assert not table.slide_id.str.contains("TS1").any()
    assert table.groupby("label").size().to_dict() == {0: 11, 1: 11}
    assert (table[table.patient.str.startswith("TCGA-18")].label == 1).all()
    assert table.groupby("patient").split.nunique().max() == 1  # a patient in one split only
    per_class = table.drop_duplicates("patient").groupby(["label", "split"]).size().to_dict()
    assert per_class == {
        (c, s): n for c in (0, 1) for s, n in (("test", 2), ("train", 6), ("val", 2))
    }
    again = pd.DataFrame(labels_from_manifests(nsclc, "LUSC", tmp_path / "slides", FRACTIONS, 3))
    other = pd.DataFrame(labels_from_manifests(nsclc, "LUSC", tmp_path / "slides", FRACTIONS, 4))
    assert again.equals(table) and not other.split.equals(table.split)
    # the rows resolve through the labels reader's `path` column
    csv = tmp_path / "labels.csv"
    table.to_csv(csv, index=False)
    slides = read_labels(csv, tmp_path / "slides")
    assert all(s.path.is_file() and s.path.name.startswith(s.slide_id) for s in slides)


def test_flat_downloads_are_found_too(tmp_path):
    manifests = {"LUAD": gdc_download(tmp_path / "a", "05", 4, flat=True)}
    manifests["LUSC"] = gdc_download(tmp_path / "b", "18", 4, flat=True)
    for path in (tmp_path / "b/slides").iterdir():
        path.rename(tmp_path / "a/slides" / path.name)
    rows = labels_from_manifests(manifests, "LUSC", tmp_path / "a/slides", FRACTIONS)
    assert len(rows) == 10 and all("/" not in r["path"] for r in rows)


def test_incomplete_and_missing_downloads_follow_the_policy(nsclc, tmp_path):
    slides = tmp_path / "slides"
    luad = read_manifest(nsclc["LUAD"])
    (slides / luad[0].file_id / luad[0].filename).write_bytes(b"cut")
    (slides / luad[1].file_id / luad[1].filename).unlink()
    skips = Skips()
    rows = labels_from_manifests(nsclc, "LUSC", slides, FRACTIONS, skips=skips)
    assert len(rows) == 20 and len(skips) == 2
    problems = sorted(p for _, _, p in skips.rows)
    assert "incomplete download" in problems[0] and "not downloaded" in problems[1]
    with pytest.raises(InputError, match="3 bytes, the manifest says 100"):
        labels_from_manifests(nsclc, "LUSC", slides, FRACTIONS, policy="fail")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda t: t.replace("size", "bytes"), r"missing column\(s\) \['size'\]"),
        (lambda t: t.replace("\t100\t", "\tlots\t"), "size 'lots' is not an integer"),
        (lambda t: t.replace("TCGA-05-0003", "SLIDE-05-0003"), "is no TCGA slide"),
        (lambda t: t + t.splitlines()[2] + "\n", "listed twice"),
        (lambda t: t.splitlines()[0] + "\n", "lists no file"),
    ],
)
def test_malformed_manifests_stop_the_conversion(nsclc, tmp_path, damage, problem):
    nsclc["LUAD"].write_text(damage(nsclc["LUAD"].read_text()))
    with pytest.raises(InputError, match=problem) as err:
        labels_from_manifests(nsclc, "LUSC", tmp_path / "slides", FRACTIONS)
    assert err.value.path == str(nsclc["LUAD"])


def test_labels_stage_by_hand(nsclc, tmp_path):
    labels, skipped = tmp_path / "out/labels.csv", tmp_path / "out/skipped.tsv"
    cmd = [
        sys.executable,
        str(ROOT / "scripts/wsi.py"),
        "labels",
        "--slides",
        str(tmp_path / "slides"),
    ]
    for name, path in nsclc.items():
        cmd += ["--manifest", name, str(path)]
    cmd += ["--positive", "LUSC", "--labels", str(labels), "--skipped", str(skipped)]
    result = subprocess.run([*cmd, "--settings", '{"seed": 5}'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(labels)
    assert list(table.columns) == ["slide_id", "label", "split", "path", "patient"]
    assert len(table) == 22 and skipped.read_text().count("\n") == 1
    bad = subprocess.run(
        [*cmd[:-4], "--positive", "LUNG", *cmd[-4:]], capture_output=True, text=True
    )
    assert (
        bad.returncode == 2 and "one of them 'LUNG'" in bad.stderr and "Traceback" not in bad.stderr
    )


def released_graphs(root: Path, slides: int = 24) -> tuple[Path, Path]:
    """A folder of mil4wsi-layout graph files and its labels CSV (half tumour; 60/20/20)."""
    graphs = root / "mil4wsi"
    graphs.mkdir(parents=True)
    rows = ["slide_id,label,split"]
    for k in range(slides):
        label, slide_id = k % 2, f"slide_{k:03d}"
        split = "train" if k < slides * 0.6 else "val" if k < slides * 0.8 else "test"
        graph = synthetic_slide_graph(label, seed=k, slide_id=slide_id)
        save_as_mil4wsi(graph, graphs / f"{slide_id}.pt", f"{slide_id}_{label}")
        rows.append(f"{slide_id},{label},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return graphs, root / "labels.csv"


def test_mil4wsi_stage_checks_labels_against_the_files(tmp_path):
    from workflow.wsi.prepare import mil4wsi_dataset, read_index

    graphs, labels = released_graphs(tmp_path, slides=6)
    text = labels.read_text().replace("slide_001,1", "slide_001,0")
    labels.write_text(text + "slide_404,1,test\n")
    with pytest.raises(InputError, match="slide_404.pt"):
        mil4wsi_dataset(
            graphs, labels, tmp_path / "g/index.tsv", tmp_path / "g/s.tsv", "skip", False
        )
    labels.write_text(text)
    index = tmp_path / "g/index.tsv"
    mil4wsi_dataset(graphs, labels, index, tmp_path / "g/skipped.tsv", "skip", False)
    table = read_index(index)
    assert len(table) == 5 and "slide_001" not in set(table.slide_id)
    assert "disagrees with" in (tmp_path / "g/skipped.tsv").read_text()
    with pytest.raises(InputError, match=r"label 1 disagrees with .* \(0\)"):
        mil4wsi_dataset(graphs, labels, index, tmp_path / "g/skipped.tsv", "fail", False)


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake_in(workdir, "sources.yaml", *args, check=check)


@pytest.mark.slow
def test_mil4wsi_and_gdc_datasets_in_the_dag(tmp_path, nsclc):
    """A released-graph dataset trains and evaluates without touching a slide; a TCGA dataset
    gets its labels from its manifests before segmentation."""
    (tmp_path / "repo").mkdir()
    workdir = copy_repo(tmp_path / "repo")
    graphs, labels = released_graphs(tmp_path)
    overlay = {
        "tracks": ["wsi"],
        "wsi": {
            "datasets": {
                "demo": {"enabled": False},
                "released": {"mil4wsi": str(graphs), "labels": str(labels)},
                "tcga": {
                    "slides": str(tmp_path / "slides"),
                    "manifests": {k: str(v) for k, v in nsclc.items()},
                    "positive": "LUSC",
                },
            },
            "experiments": {"dasmil": {"model": "dasmil", "max_epochs": 15, "lr": 0.002}},
        },
    }
    (workdir / "sources.yaml").write_text(yaml.safe_dump(overlay))
    dry = smk(workdir, "-n", "--cores", "1", "-p").stdout
    assert "rule wsi_mil4wsi:" in dry and "rule wsi_labels:" in dry
    assert "results/wsi/released/prep/segment" not in dry  # no slide is read for it
    assert "results/wsi/tcga/labels/labels.csv" in dry.split("rule wsi_segment:")[1]

    run = workdir / "results/wsi/released/dasmil/seed0"
    smk(workdir, "--cores", "2", f"{run.relative_to(workdir)}/metrics.json")
    record = json.loads((run / "metrics.json").read_text())
    assert record["extra"]["test_slides"] == 4
    assert record["metrics"]["AUC"] >= 0.8, record["metrics"]  # the x20-only signal is learnt
    # figures without a segment stage: heatmaps on white, from tile-grid coordinates
    figures = tmp_path / "figures"
    cmd = [sys.executable, str(ROOT / "scripts/wsi.py"), "figures", "--predictions"]
    cmd += [str(run / "predictions.parquet"), "--attention", str(run / "attention.h5")]
    cmd += ["--roc", str(figures / "roc.png"), "--heatmaps", str(figures / "heatmaps")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list((figures / "heatmaps").glob("slide_*.png"))) == 4


def test_the_encoder_name_is_checked_before_any_job():
    from workflow.common.config import ConfigError, load_yaml
    from workflow.wsi.sources import check_encoder

    for config in ("config/config.yaml", "config/leonardo.yaml"):
        check_encoder(load_yaml(ROOT / config)["wsi"])
    with pytest.raises(ConfigError, match=r"'vit_smal_patch16_224' is not a timm model "
                       r"\(similar: vit_small_patch16_224"):  # fmt: skip
        check_encoder({"features": {"encoder": "vit_smal_patch16_224"}})
