# The two commands of README.md:
#   make demo   set up, then run every enabled track end to end on the built-in demo data
#   make test   set up, then run the checks and tests (what CI runs)
SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
CORES ?= all

.PHONY: setup demo test lint dryrun pytest clean

setup: $(VENV)/.installed

# torch and torchvision first and by exact version, so no other package pulls a different build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

demo: setup
	snakemake --cores $(CORES)

lint: setup
	ruff check .
	snakemake --lint

dryrun: setup
	snakemake -n --cores 1 --quiet rules
	LEONARDO_ACCOUNT=$${LEONARDO_ACCOUNT:-IscrB_DRYRUN} snakemake -n --quiet rules \
		--profile profiles/leonardo --configfile config/leonardo.yaml

pytest: setup
	pytest -ra

test: lint dryrun pytest

clean:
	rm -rf results logs benchmarks data/demo .snakemake report.html
