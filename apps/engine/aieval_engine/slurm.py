"""The run's Slurm jobs, when its tasks go to a cluster (`params.slurm`: OpenCompass' SlurmRunner runs each task as
`srun ... python <task> <task config>`).

Cancelling a run kills its process group (launchers.kill_process_group), srun included. A SIGKILLed srun does not
take its job along: srun's own watcher process, which would cancel the job when srun dies, is in the same group and
dies with it, so the job's task would run on (measured with Slurm 22.05). Every job of a run therefore carries a
comment naming the run, and stopping the run scancels the jobs that carry it.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

COMMENT_PREFIX = "aieval-run-"
_COMMAND_TIMEOUT_S = 30


def slurm_job_comment(job_dir: str | Path) -> str:
    """The `--comment` of a run's Slurm jobs: derived from its job directory (one run at a time writes there), in
    characters that need no quoting on SlurmRunner's shell command line."""
    digest = hashlib.sha256(str(Path(job_dir).resolve()).encode()).hexdigest()[:20]
    return f"{COMMENT_PREFIX}{digest}"


def jobs_with_comment(comment: str, environ: dict[str, str] | None = None) -> list[str]:
    """Ids of this user's queued or running Slurm jobs that carry `comment`."""
    listed = subprocess.run(["squeue", "--me", "--noheader", "--format=%i|%k"], capture_output=True, text=True,
                            env=environ, timeout=_COMMAND_TIMEOUT_S, check=True)
    ids = []
    for line in listed.stdout.splitlines():
        job_id, _, job_comment = line.strip().partition("|")
        if job_comment == comment:
            ids.append(job_id)
    return ids


def cancel_jobs(comment: str, environ: dict[str, str] | None = None) -> list[str]:
    """scancel every job of this user that carries `comment`; the ids cancelled. Never raises: a run being stopped
    must stop even when Slurm does not answer (the failure is logged)."""
    try:
        ids = jobs_with_comment(comment, environ)
        if ids:
            subprocess.run(["scancel", *ids], capture_output=True, text=True, env=environ,
                           timeout=_COMMAND_TIMEOUT_S, check=True)
        return ids
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        log.warning("could not cancel the Slurm jobs of %s: %s", comment, detail)
        return []
