"""A real single-node Slurm cluster for the tests, from Debian's `slurm-wlm` (scripts/ensure_services.sh installs it):
its own munged, slurmctld and slurmd, started in the foreground as children of the test process, with every file
(munge key and socket, slurm.conf, state, spool, logs) in one temporary directory and the daemons on free loopback
ports, so nothing of the machine's own Slurm or munge (if any) is read or changed.

What a container without systemd needs, found on Debian 12 (Slurm 22.05): no cgroups (ProctrackType=
proctrack/linuxproc, TaskPlugin=task/none, no accounting gatherer), the daemons run as root, and munged refuses a
socket directory that is not searchable by everyone (so the directory is 0755, the key 0600). Completed jobs are
written by the jobcomp/filetxt plugin (no slurmdbd is needed): `completed_jobs()` reads them back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aieval_engine.local_server import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "sinfo", "squeue", "scancel")
NODE = "localhost"
PARTITION = "aieval"
_JOB = re.compile(r"JobId=(?P<id>\d+) .*?Name=(?P<name>.*?) JobState=(?P<state>\S+) Partition=(?P<partition>\S+)")


def missing_binaries() -> list[str]:
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    return [name for name in (*DAEMONS, "mungekey", *CLIENTS) if shutil.which(name, path=path) is None]


@dataclass(frozen=True)
class CompletedJob:
    job_id: int
    name: str
    state: str
    partition: str


class SingleNodeSlurm:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="aieval-slurm-"))
        self.root.chmod(0o755)  # munged wants every directory above its socket searchable by all
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"
        self._processes: list[subprocess.Popen] = []
        self.environ = {**os.environ, "SLURM_CONF": str(self.conf),
                        "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"}

    def start(self, timeout_s: float = 60.0) -> SingleNodeSlurm:
        munge = self.root / "munge"
        for folder in ("munge", "state", "spool", "log"):
            (self.root / folder).mkdir(mode=0o755)
        key = munge / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True,
                       env=self.environ)
        key.chmod(0o600)
        socket = munge / "munge.sock"
        self._spawn("munged", "--foreground", f"--socket={socket}", f"--key-file={key}",
                    f"--log-file={self.root / 'log' / 'munged.log'}", f"--pid-file={munge / 'munged.pid'}",
                    f"--seed-file={munge / 'seed'}")
        self._wait(lambda: socket.exists(), timeout_s, "munged did not create its socket")
        cpus = os.cpu_count() or 1
        self.conf.write_text("\n".join([
            "ClusterName=aieval-test",
            f"SlurmctldHost={NODE}",
            f"SlurmctldPort={free_port(16800, 16899)}",
            f"SlurmdPort={free_port(16900, 16999)}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={socket}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={self.jobcomp}",
            "MpiDefault=none",
            "ReturnToService=2",
            # Tasks of a run may wait for each other (an eval task for its infer task): share the few cores.
            f"NodeName={NODE} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8",
            "",
        ]))
        self._spawn("slurmctld", "-D")
        self._spawn("slurmd", "-D", "-N", NODE)
        self._wait(self._node_idle, timeout_s, "the Slurm node did not become idle")
        return self

    def _spawn(self, *argv: str) -> None:
        log = open(self.root / "log" / f"{argv[0]}.stderr", "wb")  # noqa: SIM115 (kept open for the daemon's life)
        self._processes.append(subprocess.Popen(argv, env=self.environ, stdout=log, stderr=log,
                                                stdin=subprocess.DEVNULL))
        log.close()

    def _node_idle(self) -> bool:
        for process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited with {process.returncode}: {self.logs()}")
        listed = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True,
                                env=self.environ, timeout=30)
        return listed.stdout.strip() == "idle"

    @staticmethod
    def _wait(condition, timeout_s: float, message: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(message)
            time.sleep(0.2)

    def completed_jobs(self) -> list[CompletedJob]:
        """Every job that has ended, as slurmctld's job completion log records it."""
        if not self.jobcomp.exists():
            return []
        jobs = []
        for line in self.jobcomp.read_text().splitlines():
            match = _JOB.search(line)
            if match:
                jobs.append(CompletedJob(int(match["id"]), match["name"], match["state"], match["partition"]))
        return jobs

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted((self.root / "log").iterdir()))

    def stop(self) -> None:
        # A job's slurmstepd and task outlive slurmd: end every job first (left over only when a test failed).
        if self.conf.exists() and all(process.poll() is None for process in self._processes):
            subprocess.run(["scancel", "--me"], env=self.environ, capture_output=True, timeout=30)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and subprocess.run(
                    ["squeue", "--me", "--noheader"], env=self.environ, capture_output=True, text=True,
                    timeout=30).stdout.strip():
                time.sleep(0.2)
        for process in reversed(self._processes):  # slurmd, slurmctld, then munged
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
