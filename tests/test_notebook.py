"""notebooks/migrate.ipynb runs top to bottom, on its own embedded PostgreSQL, without an error.

The kernel is this interpreter (the venv's), through a kernelspec written into a private
JUPYTER_PATH: no kernel has to be registered on the machine, and a user's own `python3`
kernelspec (which may point at another Python) is never used.

Also runnable by hand, to refresh the chart in docs/:
    .venv/bin/python tests/test_notebook.py --save-chart docs/notebook-chart.png
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "migrate.ipynb"
KERNEL_NAME = "llmspell-migrate-venv"


def private_kernel_env(root: Path) -> dict[str, str]:
    """Environment variables that make Jupyter find a kernel running this interpreter and keep
    its runtime and IPython files under `root`."""
    spec_dir = root / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "llmspell-migrate (venv)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return {
        "JUPYTER_PATH": str(root / "jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / "jupyter-runtime"),
        "IPYTHONDIR": str(root / "ipython"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }


def run_notebook(workdir: Path, env: dict[str, str], timeout: int = 180) -> nbformat.NotebookNode:
    """Execute the notebook in a kernel that inherits `env`; raise on the first cell error."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(
            nb,
            kernel_name=KERNEL_NAME,
            timeout=timeout,
            allow_errors=False,
            resources={"metadata": {"path": str(workdir)}},
        )
        client.execute()
        return nb
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _text(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
            data = o.get("data", {})
            out.append(data.get("text/markdown", ""))
            out.append(data.get("text/plain", ""))
    return "\n".join(out)


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from destinations import embedded_server

    # Short on purpose: the embedded PostgreSQL puts its Unix socket in its data folder, and a
    # socket path may not exceed 107 bytes (pytest's tmp_path is already long).
    work = Path(tempfile.mkdtemp(prefix="llmnb-"))
    chart = tmp_path / "chart.png"
    # A target or password configured in the environment must not leak into the notebook.
    monkeypatch.setenv("LLMSPELL_MIGRATE_TARGET", "postgresql://nobody@127.0.0.1:1/nowhere")
    env = private_kernel_env(tmp_path)
    env.update(
        LLMSPELL_NOTEBOOK_WORKDIR=str(work),
        LLMSPELL_NOTEBOOK_RECORDS="400",
        LLMSPELL_NOTEBOOK_SAVE_CHART=str(chart),
    )
    started = time.perf_counter()
    try:
        nb = run_notebook(tmp_path, env)
    finally:
        # The notebook's last cell stops its server; make sure of it if a cell failed earlier
        # (without hiding that cell's error if the server is already gone).
        try:
            embedded_server.stop(work / ".llmspell-migrate" / "postgres", mode="immediate")
        except Exception:
            pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started

    text = _text(nb)
    assert "status: DRY_RUN" in text
    assert "[DRY-RUN] Pre-flight validation passed" in text
    assert "| status | SUCCESS |" in text
    assert "Validating migration..." in text
    assert "embedded PostgreSQL stopped" in text
    images = [
        o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert images, "the chart cell displayed no image"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"work folder:   {work}" in text
    assert f"tool home:     {work / '.llmspell-migrate'}" in text
    assert f"PostgreSQL data folder: {work / '.llmspell-migrate' / 'postgres'}" in text
    assert not (tmp_path / ".llmspell-migrate").exists()  # the test's own home stayed untouched
    assert elapsed < 120, f"notebook took {elapsed:.0f}s"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Execute notebooks/migrate.ipynb headless.")
    parser.add_argument("--save-chart", metavar="PNG", help="also save the chart there")
    parser.add_argument("--records", default="2000", help="sample size (default 2000)")
    parser.add_argument("--output", metavar="IPYNB", help="write the executed notebook there")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmspell-notebook-run-") as tmp:
        env = private_kernel_env(Path(tmp))
        env["LLMSPELL_NOTEBOOK_RECORDS"] = args.records
        if args.save_chart:
            env["LLMSPELL_NOTEBOOK_SAVE_CHART"] = str(Path(args.save_chart).resolve())
        executed = run_notebook(Path(tmp), env)
    if args.output:
        nbformat.write(executed, args.output)
    print("notebook ran without errors")
