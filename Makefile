# The two commands of README.md:
#   make demo   set up, then run every enabled track end to end on the built-in demo data
#   make test   set up, then run the checks and tests (what CI runs)
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all
# htcondor's Python bindings (the HTCondor executor plugin) warn at every Snakemake start on a
# machine without an HTCondor configuration; the venv's activate script says the same.
CONDOR_QUIET := ignore:The environment variable CONDOR_CONFIG is unset
export PYTHONWARNINGS ?= $(CONDOR_QUIET)

.PHONY: setup demo test lint dryrun pytest test-packages nerfstudio clean

setup: $(VENV)/.installed

# torch and torchvision first and by exact version, so no other package pulls a different build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	grep -q CONDOR_CONFIG $(VENV)/bin/activate || \
		echo 'export PYTHONWARNINGS="$${PYTHONWARNINGS:-$(CONDOR_QUIET)}"' >> $(VENV)/bin/activate
	touch $@

# The NeRF track's nerfstudio engine (experiments with `engine: nerfstudio`) in its own venv:
# torch first and by version, then envs/nerfstudio.txt. LPIPS's AlexNet weights are fetched
# now, where the network is, into the TORCH_HOME the runs use (compute nodes fetch nothing).
NS_VENV := .venv-nerfstudio
nerfstudio: $(NS_VENV)/.installed

$(NS_VENV)/.installed: envs/nerfstudio.txt
	python3 -m venv $(NS_VENV)
	$(NS_VENV)/bin/pip install --quiet --upgrade pip
	$(NS_VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(NS_VENV)/bin/pip install --quiet -r envs/nerfstudio.txt
	TORCH_HOME=$(NS_VENV)/torch $(NS_VENV)/bin/python -c "import torchvision; \
		torchvision.models.alexnet(weights='IMAGENET1K_V1')" || echo "note: no network: put \
		alexnet-owt-7be5be79.pth in $(NS_VENV)/torch/hub/checkpoints/ before a run (LPIPS)"
	touch $@

demo: setup
	snakemake --cores $(CORES)

lint: setup
	ruff check .
	snakemake --lint

# Every site's profile dry-runs the Leonardo-size DAG (the local one the demo's); the image's
# (profiles/apptainer) needs an apptainer command even for a dry-run: tests/test_container.py.
dryrun: setup
	snakemake -n --cores 1 --quiet rules
	snakemake -n --quiet rules \
		--profile profiles/leonardo --configfile config/leonardo.yaml
	snakemake -n --quiet rules \
		--profile profiles/leonardo --profile profiles/leonardo-debug \
		--configfile config/leonardo.yaml config/smoke.yaml tests/ddp.yaml
	snakemake -n --quiet rules --profile profiles/dtu-lsf --configfile config/leonardo.yaml
	snakemake -n --quiet rules --profile profiles/infn-htcondor --configfile config/leonardo.yaml
	snakemake -n --quiet rules --profile profiles/infn-k8s --configfile config/leonardo.yaml

# One worker per core (at most 4): each test module runs whole on one worker, so the SLURM
# cluster and the module-scoped demo runs start once; the end-to-end DAGs overlap. xdist's
# default order (modules with most tests first) pairs long modules with many short ones:
# long modules first instead ran them side by side on 2 cores and took longer.
pytest: setup
	pytest -ra --durations 15 --numprocesses auto --maxprocesses 4 --dist loadfile

# tests/slurm starts a one-node SLURM cluster: it needs Debian's slurm-wlm and munge (root);
# tests/sites moves the Kubernetes jobs' files with rsync; tests/sequence cuts promoters with
# bedtools as Xpresso's scripts do. Without them (or without root and apt-get) those tests
# skip and say what to install.
test-packages:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null \
		&& command -v rsync >/dev/null && command -v bedtools >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			slurm-wlm munge rsync bedtools >/dev/null; \
	else echo "note: slurm-wlm/munge/rsync/bedtools missing and not installable here: \
		tests/slurm, tests/sites and the bedtools check skip in part"; fi

test: test-packages lint dryrun pytest

clean:
	rm -rf results logs benchmarks data/demo .snakemake report.html
