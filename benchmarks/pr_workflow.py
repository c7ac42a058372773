"""Wall time of a pull request's pipeline run (pr.yml under act) against `make run` on a fresh clone.

Both sides do the same work on this machine, from nothing, on the bundled data: create a
virtualenv and install the pipeline from the lock (pip's cache warm, as setup-python's cache
leaves it), reproduce every stage with DVC, gate, and write the report.

  make run        a fresh clone of this checkout: `make run` (the laptop's first run)
  pr.yml (act)    the workflow as a hosted runner runs it, for a documentation-only pull request
                  on a repository whose DVC remote is still empty (a fork's first pull request):
                  checkout, `make install`, `dvc pull` (nothing there), `dvc repro`, `dvc push`,
                  the comparison with the commit, gate, report, comment, artifact, verdict

The workflow runs with act in host mode against the stand-ins for GitHub that its tests use
(tests/e2e/act.py): a local bare repository for GitHub's git server, local actions for checkout,
setup-python, setup-cml and upload-artifact, and a recorder for `cml`. The headline is the ratio
pr.yml / make run, the workflow's overhead over the same work done by hand. Goal: the pull
request's run on the bundled data within 6 minutes on the 2-core development machine.

    .venv/bin/python benchmarks/pr_workflow.py [--json PATH]

It is a measurement, not a test: it exits 0 whatever the figures (1 when a side fails).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.act import GitHub, make_github, open_pull_request, run_pr_workflow  # noqa: E402


def make_run_seconds(work: Path) -> float:
    """`make run` in a fresh clone of this checkout (its uncommitted changes applied)."""
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=ROOT, capture_output=True, check=True).stdout
    if diff:
        subprocess.run(["git", "apply", "--allow-empty"], cwd=clone, input=diff, check=True)
    started = time.perf_counter()
    done = subprocess.run(["make", "run"], cwd=clone, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise RuntimeError(f"make run failed with exit status {done.returncode}")
    return seconds


def workflow_seconds(work: Path) -> tuple[float, GitHub]:
    """pr.yml for a documentation-only pull request, with an empty DVC remote: everything runs."""
    remote = work / "bucket"
    remote.mkdir(parents=True)
    gh = make_github(ROOT, work / "github", remote)

    def edit_docs(repo: Path) -> None:
        (repo / "README.md").write_text((repo / "README.md").read_text() + "\nA line of documentation.\n")

    pr = open_pull_request(gh, 1, edit_docs, "docs: one more line")
    started = time.perf_counter()
    run = run_pr_workflow(gh, pr)
    seconds = time.perf_counter() - started
    if run.returncode != 0 or "Job succeeded" not in run.log:
        sys.stdout.write(run.log[-5000:])
        raise RuntimeError(f"the pull request's run failed (act exit status {run.returncode})")
    for stage in ("ingest", "split", "train", "export", "evaluate", "deepchecks"):
        if f"Running stage '{stage}'" not in run.log:
            raise RuntimeError(f"stage {stage} did not run: the remote was not empty")
    return seconds, gh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitml-bench-pr-") as tmp:
        work = Path(tmp)
        try:
            by_hand = make_run_seconds(work / "by-hand")
            workflow, _ = workflow_seconds(work / "workflow")
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"pr_workflow: {exc}", file=sys.stderr)
            return 1
    ratio = workflow / by_hand
    goal = 6 * 60
    print("from nothing, on the bundled data: install from the lock (warm pip cache), dvc repro, gate, report")
    print(f"  make run on a fresh clone      {by_hand:6.0f} s")
    print(
        f"  pr.yml under act (hosted)      {workflow:6.0f} s | ratio {ratio:.2f} | goal <= {goal} s: "
        + ("met" if workflow <= goal else "NOT met")
    )
    if args.json:
        figures = {"make_run_seconds": by_hand, "workflow_seconds": workflow, "ratio": ratio, "goal_seconds": goal}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
