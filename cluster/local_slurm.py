"""A one-node SLURM cluster on this machine, to try and test ``profiles/slurm``.

    python cluster/local_slurm.py up      # install if needed, configure, start the daemons
    python cluster/local_slurm.py status
    python cluster/local_slurm.py down    # cancel what is left, stop the daemons

Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` packages are installed
with apt-get when missing (needs root). The cluster's files live in one directory (by
default /tmp/lowrank-sparse-slurm): a munge key and socket of its own, state, logs and the
daemons' process ids. Its ``slurm.conf`` (a ``debug`` partition holding this machine's
CPUs, no accounting storage: jobs are seen through ``squeue``) goes to SLURM's default
path, /etc/slurm/slurm.conf, and only where the machine has none: SLURM_CONF would not
do, as the SLURM executor's job step (snakemake-executor-plugin-slurm-jobstep 0.6.1)
removes it before the ``srun`` inside each job. ``down`` removes that file again.
The daemons run in the foreground of processes this module starts and are stopped by
those process ids only; nothing else on the machine is touched.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")
DEFAULT_DIR = Path("/tmp/lowrank-sparse-slurm")
SLURM_CONF = Path("/etc/slurm/slurm.conf")  # where srun, sbatch, ... look by default
MARK = "# A one-node cluster written by cluster/local_slurm.py; files in "
PARTITION = "debug"
# squeue shows a finished job for MinJobAge seconds; the SLURM executor plugin may wait
# up to 180 s between two status queries, so a shorter age could hide a job's end.
MIN_JOB_AGE = 300
INSTALL_TIMEOUT = 600  # seconds for apt-get (measured: ~35 s for the four packages)
START_TIMEOUT = 60     # seconds until the node is idle


class Unavailable(RuntimeError):
    """SLURM cannot be brought up on this machine (the message says why)."""


def _which(command):
    """Path of ``command``, also in the sbin directories a user's PATH may lack."""
    return shutil.which(command, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _run(args, timeout, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def install_packages(timeout=INSTALL_TIMEOUT):
    """Install Debian's SLURM and munge packages unless their commands are on PATH.

    Needs root and apt-get. A ``policy-rc.d`` that forbids starting services is put in
    place for the install if the machine has none, so that apt starts no daemon that
    this module would not own (removed afterwards).
    """
    if all(_which(command) for command in COMMANDS):
        return
    if os.geteuid() != 0:
        raise Unavailable("SLURM is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise Unavailable("SLURM is not installed and there is no apt-get to install it")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\n# lowrank-sparse cluster/local_slurm.py: no service starts\nexit 101\n")
        policy.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    deadline = time.monotonic() + timeout
    try:
        result = _run(install, timeout, env=env)
        if result.returncode != 0:  # an old or empty package list: refresh it once
            _run(["apt-get", "update", "-q"], max(1, deadline - time.monotonic()), env=env)
            result = _run(install, max(1, deadline - time.monotonic()), env=env)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"apt-get did not install {' '.join(PACKAGES)} in {timeout} s") from None
    finally:
        if own_policy:
            policy.unlink()
    if result.returncode != 0:
        raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed:\n{result.stderr[-2000:]}")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _node_hardware():
    """(CPUs, RealMemory in MB) as slurmd detects them on this machine."""
    fields = dict(item.split("=", 1) for item in _run([_which("slurmd"), "-C"], 30).stdout.split()
                  if "=" in item)
    return int(fields["CPUs"]), int(fields["RealMemory"])


def write_config(directory, path=SLURM_CONF):
    """Write the munge key into ``directory`` and the cluster's ``slurm.conf`` to ``path``."""
    directory = Path(directory)
    for sub in ("state", "spool", "logs"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    key = directory / "munge.key"
    if not key.exists():
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    cpus, memory = _node_hardware()
    node = socket.gethostname().split(".")[0]
    settings = {
        "ClusterName": "lowrank-sparse-local",
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmctldPort": _free_port(),
        "SlurmdPort": _free_port(),
        "AuthType": "auth/munge",
        "AuthInfo": f"socket={directory / 'munge.socket'}",
        "CredType": "cred/munge",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "StateSaveLocation": directory / "state",
        "SlurmdSpoolDir": directory / "spool",
        "SlurmctldPidFile": directory / "slurmctld.pid",
        "SlurmdPidFile": directory / "slurmd.pid",
        "SlurmctldLogFile": directory / "logs" / "slurmctld.log",
        "SlurmdLogFile": directory / "logs" / "slurmd.log",
        # No cgroups: processes tracked through /proc, no task containment.
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/linux",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",  # --mem requests are scheduled
        "DefMemPerCPU": 1000,
        "SchedulerType": "sched/backfill",
        "MpiDefault": "none",
        "ReturnToService": 2,
        "MinJobAge": MIN_JOB_AGE,
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/none",
    }
    lines = [f"{name}={value}" for name, value in settings.items()]
    lines.append(f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN")
    lines.append(f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{MARK}{directory}\n" + "\n".join(lines) + "\n")


class LocalCluster:
    """munged, slurmctld and slurmd of a one-node cluster whose files are in ``directory``.

    ``start()`` installs what is missing, writes the configuration and starts the three
    daemons; ``stop()`` cancels the cluster's jobs and stops the daemons by the process
    ids recorded in ``directory/pids.json`` (so ``stop`` works from another process too).
    The configuration goes to /etc/slurm/slurm.conf (see the module's docstring), which
    must be absent or left there by this module for a cluster that no longer runs.
    Also a context manager.
    """

    def __init__(self, directory=DEFAULT_DIR):
        self.directory = Path(directory).resolve()
        self.config = SLURM_CONF
        self.pid_file = self.directory / "pids.json"

    @property
    def env(self):
        """This process's environment, less a SLURM_CONF that would point elsewhere."""
        return {name: value for name, value in os.environ.items() if name != "SLURM_CONF"}

    def slurm(self, *args, timeout=30):
        """Run a SLURM command (it reaches this cluster through /etc/slurm/slurm.conf)."""
        return _run(list(args), timeout, env=self.env)

    def _claim_config(self):
        """Refuse to replace a slurm.conf that is not ours or whose cluster still runs."""
        if not self.config.exists():
            return
        first = self.config.read_text(errors="replace").split("\n", 1)[0]
        if not first.startswith(MARK):
            raise Unavailable(f"this machine has a SLURM configuration of its own ({self.config}); "
                              f"not replacing it")
        owner = LocalCluster(first[len(MARK):])
        if owner._recorded_pids():
            raise Unavailable(f"a one-node cluster from {owner.directory} is running; stop it "
                              f"first: python cluster/local_slurm.py down --dir {owner.directory}")

    def start(self):
        install_packages()
        if self._recorded_pids():
            raise Unavailable(f"a cluster recorded in {self.pid_file} is still running; "
                              f"stop it first (python cluster/local_slurm.py down)")
        self._claim_config()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)  # munged refuses a socket directory others can write to
        write_config(self.directory, self.config)
        logs = self.directory / "logs"
        node = socket.gethostname().split(".")[0]
        commands = {
            "munged": [_which("munged"), "--foreground", "--force",
                       f"--socket={self.directory / 'munge.socket'}",
                       f"--key-file={self.directory / 'munge.key'}",
                       f"--pid-file={self.directory / 'munged.pid'}",
                       f"--seed-file={self.directory / 'munged.seed'}",
                       f"--log-file={logs / 'munged.log'}"],
            "slurmctld": [_which("slurmctld"), "-D", "-i", "-f", str(self.config)],
            "slurmd": [_which("slurmd"), "-D", "-N", node, "-f", str(self.config)],
        }
        pids = {}
        try:
            for name, command in commands.items():
                with open(logs / f"{name}.out", "ab") as out:
                    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                               stderr=subprocess.STDOUT, env=self.env,
                                               start_new_session=True)
                pids[name] = process.pid
                self.pid_file.write_text(json.dumps(pids))
                if name == "munged":
                    self._wait(lambda: (self.directory / "munge.socket").exists(), name)
                elif name == "slurmctld":
                    self._wait(lambda: self.slurm("scontrol", "ping").returncode == 0, name)
            self._wait(self._node_idle, "slurmd (node idle)")
        except BaseException:
            self.stop()
            raise
        return self

    def _node_idle(self):
        state = self.slurm("sinfo", "-h", "-o", "%t").stdout.split()
        return state == ["idle"]

    def _wait(self, ready, what):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            # Just started by us, so a pid cannot have been reused: only ask if it lives
            # (its /proc cmdline may not show the daemon's name yet).
            for name, pid in json.loads(self.pid_file.read_text()).items():
                if not _alive(pid):
                    raise Unavailable(f"{name} exited at start; see {self.directory / 'logs'}:\n"
                                      + self._log_tail(name))
            if ready():
                return
            time.sleep(0.5)
        raise Unavailable(f"{what} not ready after {START_TIMEOUT} s; see {self.directory / 'logs'}")

    def _log_tail(self, name):
        tails = []
        for path in sorted((self.directory / "logs").glob(f"{name}*")):
            tails.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(tails)

    def _recorded_pids(self):
        """The recorded daemons that still run as what they were started as."""
        if not self.pid_file.exists():
            return {}
        pids = json.loads(self.pid_file.read_text())
        return {name: pid for name, pid in pids.items() if _is_daemon(pid, name)}

    def stop(self, timeout=30):
        """Cancel the cluster's jobs, then stop slurmd, slurmctld and munged by their pids."""
        pids = self._recorded_pids()
        if "slurmctld" in pids and "slurmd" in pids:
            jobs = self.slurm("squeue", "-h", "-o", "%A").stdout.split()
            if jobs:
                self.slurm("scancel", *jobs)
                deadline = time.monotonic() + timeout
                while (time.monotonic() < deadline
                       and self.slurm("squeue", "-h", "-t", "PD,R,CG,S", "-o", "%A").stdout.strip()):
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in pids:
                _terminate(pids[name], timeout)
        if self.pid_file.exists():
            self.pid_file.unlink()
        if self.config.exists() and self.config.read_text(errors="replace").startswith(
                f"{MARK}{self.directory}\n"):
            self.config.unlink()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def _is_daemon(pid, name):
    """Whether ``pid`` still runs ``name`` (a recorded pid may have been reused)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return Path(argv0).name == name and _alive(pid)


def _terminate(pid, timeout):
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:  # reap it if it is our child (else it is reaped by init)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if not _alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"directory for the configuration, state and logs [{DEFAULT_DIR}]")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir)
    if args.action == "up":
        try:
            cluster.start()
        except Unavailable as error:
            sys.exit(f"local_slurm: {error}")
        pids = json.loads(cluster.pid_file.read_text())
        print(f"one-node SLURM up: partition '{PARTITION}', daemons {pids}, "
              f"configuration {cluster.config}, files in {cluster.directory}")
    elif args.action == "down":
        cluster.stop()
        print("stopped")
    else:
        pids = cluster._recorded_pids()
        print(f"running: {pids}" if pids else "not running")
        if pids:
            print(cluster.slurm("sinfo").stdout)


if __name__ == "__main__":
    main()
