"""`moin launch --slurm --experts-per-job 2` on a real Slurm (conftest.py): each array task trains a pack of
clusters in one `moin train --clusters` process; every expert ends in its own folder."""
from conftest import CLUSTERS, logs, submit, summary, wait_until_done, write_scripts


def test_packed_tasks_train_every_expert(slurm, world):
    w = world
    job_script, submit_script = write_scripts(w, "--experts-per-job", 2, name="packed")
    text = job_script.read_text()
    assert "#SBATCH --array=0-1\n" in text and "'--clusters' \"$K\" '--output' \"$OUT\"" in text, text[:2000]
    jobs = submit(submit_script, slurm)
    assert [r for r, _ in jobs] == ["0-1"], jobs
    wait_until_done([j for _, j in jobs], slurm)
    for k in range(CLUSTERS):
        assert summary(w, k, "packed").exists(), logs(w, "packed")
    log = (w / "packed" / "logs" / f"slurm-{jobs[0][1]}_0.log").read_text()
    assert "task 0: clusters 0,1" in log, log[-2000:]
