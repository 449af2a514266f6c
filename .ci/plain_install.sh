#!/usr/bin/env bash
# A user's install: the package without extras, not editable, into a fresh venv, then every
# first command from a folder outside the checkout (so nothing is imported from it), with a
# HOME laid out as llmspell lays it out, so `plan` finds the database itself.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'HOME="$work/home" "$work/venv/bin/llmspell-migrate" stop-embedded >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
# from a clean export of the commit: building in the checkout would leave build/ behind
mkdir "$work/src"
git -C "$repo" archive HEAD | tar -x -C "$work/src"
"$work/venv/bin/python" -m pip install --quiet "$work/src"
cd "$work"
export HOME="$work/home"
cli="$work/venv/bin/llmspell-migrate"
"$cli" --help >/dev/null
"$work/venv/bin/python" -m pipelines.migrate --help >/dev/null
mkdir -p "$HOME/.llmspell/data"
"$work/venv/bin/python" - <<'PY'
import os
from sources.sample_db import SampleSpec, generate
# 21,000 records: above source_scan.PARALLEL_MIN, so pre-flight's second process runs from
# the installed package too
generate(os.path.expanduser("~/.llmspell/data/llmspell.db"), SampleSpec(agents=12000, workflows=3000, sessions=3000, kv=3000, tenants=2))
PY
"$cli" plan --components all --output plan.yaml
grep -q "found_by" plan.yaml
"$cli" execute --plan plan.yaml --dry-run >dry-run.out
if grep -q "second pre-flight process stopped" dry-run.out; then
    cat dry-run.out >&2; echo "pre-flight's second process failed in a plain install" >&2; exit 1
fi
cat dry-run.out
"$cli" fleet --help >/dev/null
# Dagster is an extra: without it its module says how to install it, nothing else needs it
if "$work/venv/bin/python" -c "import pipelines.dagster_defs" 2>dagster.err; then
    echo "pipelines.dagster_defs imported without the dagster extra" >&2; exit 1
fi
grep -q "pip install 'llmspell-migrate\[dagster\]'" dagster.err
echo "plain install: --help, plan (found the database itself) and --dry-run ran"
