#!/bin/sh
# The executable of every HTCondor job (the classes' job_wrapper): HTCondor passes it the
# job's Snakemake command as arguments.
# 1. Snakemake prepends `pip install --target .snakemake/pip-deployments <plugins> &&` to that
#    command whenever a storage plugin is installed in the venv (profiles/infn-k8s needs one);
#    the executor plugin (0.3.0) then mis-splits it and the job would run `python install`.
#    The venv on the shared filesystem has the plugins already and execute nodes may have no
#    internet: drop the install and run what follows it.
# 2. HTCondor starts a job with a minimal environment (getenv is false): put the bin folder of
#    the Python that runs Snakemake first on PATH, as activating the venv does, so the rules'
#    `python scripts/...` is the venv's Python too.
case " $* " in
    *" && "*)
        while [ "$#" -gt 0 ] && [ "$1" != "&&" ]; do shift; done
        shift
        ;;
esac
case "$1" in
    -*) set -- python -m snakemake "$@" ;;  # the plugin strips a leading `python -m snakemake`
    */*) PATH="${1%/*}:$PATH"; export PATH ;;
esac
exec "$@"
