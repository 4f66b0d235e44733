"""`moin launch --slurm` on a real Slurm (conftest.py): the 3 experts submitted as two job arrays (the
cluster's MaxArraySize is 2), one task cancelled mid-run with scancel, the launch written and submitted
again: finished experts are skipped, the cancelled one resumes from its checkpoint."""
import json
import os
import re
import subprocess
import time

from conftest import CLUSTERS, logs, moin, queued, submit, summary, wait_until_done, write_scripts


def test_sbatch_runs_every_expert_and_a_cancelled_task_resumes(slurm, world):
    w = world
    job_script, submit_script = write_scripts(w)
    text = job_script.read_text()
    assert "#SBATCH --array=0-1\n" in text, text[:1500]
    assert "--export=ALL,MOIN_TASK_OFFSET=2" in submit_script.read_text()

    max_array = re.search(r"MaxArraySize\s*=\s*(\d+)", subprocess.run(
        ["scontrol", "show", "config"], capture_output=True, text=True, env=slurm).stdout)
    if max_array and int(max_array.group(1)) == 2:  # the cluster this test started: one array of 3 is refused
        r = subprocess.run(["sbatch", "--array=0-2", "--wrap", "true"], capture_output=True, text=True, env=slurm)
        assert r.returncode != 0 and "Invalid job array specification" in r.stderr, r.stdout + r.stderr
    jobs = submit(submit_script, slurm)
    assert [r for r, _ in jobs] == ["0-1", "2"], jobs
    first = jobs[0][1]
    # Cancel cluster 0's task (array task 0 of the first array) once it has a checkpoint, before it ends.
    latest = w / "experts" / "0" / "checkpoints" / "latest.json"
    deadline = time.time() + 240
    while not latest.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert latest.exists(), f"no checkpoint of cluster 0 after 240 s: {queued([j for _, j in jobs], slurm)}"
    assert not summary(w, 0).exists(), "cluster 0 finished before it could be cancelled (steps too fast)"
    subprocess.run(["scancel", f"{first}_0"], env=slurm, check=True)
    wait_until_done([j for _, j in jobs], slurm)

    assert not summary(w, 0).exists()
    for k in (1, 2):
        assert summary(w, k).exists(), logs(w)
    finished_mtime = {k: os.stat(summary(w, k)).st_mtime_ns for k in (1, 2)}

    # Written again: only cluster 0's task is left, in one array, with its task id (0) unchanged.
    job_script, submit_script = write_scripts(w)
    assert "#SBATCH --array=0\n" in job_script.read_text()
    again = submit(submit_script, slurm)
    assert [r for r, _ in again] == ["0"], again
    wait_until_done([j for _, j in again], slurm)
    assert summary(w, 0).exists(), (w / "experts" / "logs" / f"slurm-{again[0][1]}_0.log").read_text()[-3000:]
    for k in (1, 2):  # finished experts were not trained again
        assert os.stat(summary(w, k)).st_mtime_ns == finished_mtime[k]
    log = (w / "experts" / "logs" / f"slurm-{again[0][1]}_0.log").read_text()
    m = re.search(r"resumed from \S+ \(step (\d+) of 24\)", log)
    assert m and int(m.group(1)) >= 2, log[-3000:]
    with open(summary(w, 0)) as f:
        assert json.load(f).get("resumed", 1) >= 1

    # Nothing is left: the local launcher skips all three, and --slurm writes no script.
    r = moin("launch", "--partition", w / "part", "--config", w / "train.json", "--output", w / "experts",
             "--gpus", "none")
    assert r.stdout.count("skipped") == CLUSTERS, r.stdout
    os.remove(job_script)
    write_scripts(w)
    assert not job_script.exists()
