"""tpu_setup/ scripts: exact dry-run commands, argument errors, and real runs against fake tools.

Every script runs in a subprocess with fake `gcloud`, `srun`, `scontrol` and `hostname` first
on PATH; the fakes append each call (shell-quoted, one line) to a log, so a test sees exactly
what a script ran. Worker-side command lines are run by bash in a fake $HOME to check that
they start, find and stop the trainer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tpu_setup"
SBATCH = SETUP / "slurm" / "train.sbatch"
SCRIPTS = [SETUP / f"{name}.sh" for name in ("create", "install", "launch", "teardown")]
SCRIPTS.append(SBATCH)

# One fake for every external tool: logs the call; scp keeps the copied file, scontrol answers
# with two nodes, srun runs its command as task 1 / local task 1.
FAKE_TOOL = f"""#!{sys.executable}
import os, shlex, shutil, subprocess, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(shlex.join([name, *sys.argv[1:]]) + "\\n")
if name == "hostname":
    print("worker-0")
elif name == "scontrol":
    print("gpu01\\ngpu02")
elif name == "gcloud" and sys.argv[4] == "scp":
    shutil.copy(sys.argv[5], os.environ["FAKE_CAPTURE"])
elif name == "srun":
    command = [a for a in sys.argv[1:] if not a.startswith("--kill")]
    env = dict(os.environ, SLURM_PROCID="1", SLURM_LOCALID="1")
    sys.exit(subprocess.call(command, env=env))
"""

# Stands in for `s2s`: records its argv, environment and pid; with FAKE_S2S_WAIT it keeps
# running until SIGTERM, which it acknowledges as the real loop would (checkpoint, exit 0).
FAKE_S2S = f"""#!{sys.executable}
import json, os, signal, sys, time
out = os.environ["FAKE_S2S_OUT"]
def on_term(*_):
    open(out + ".sigterm", "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
keys = ("PYTHONUNBUFFERED", "JAX_PLATFORMS", "JAX_LOCAL_DEVICE_IDS", "XLA_FLAGS")
record = {{"argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}, "pid": os.getpid()}}
with open(out + ".tmp", "w") as f:
    json.dump(record, f)
os.replace(out + ".tmp", out)
while os.environ.get("FAKE_S2S_WAIT"):
    time.sleep(0.05)
"""


def _write_exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """A clean environment: fake tools first on PATH, no S2S_*/SLURM_* variables leaking in."""
    fake_bin = tmp_path / "bin"
    for tool in ("gcloud", "srun", "scontrol", "hostname"):
        _write_exe(fake_bin / tool, FAKE_TOOL)
    (tmp_path / "tmp").mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("S2S_", "SLURM_"))}
    return base | {
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "TMPDIR": str(tmp_path / "tmp"),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_CAPTURE": str(tmp_path / "captured.tgz"),
        "FAKE_S2S_OUT": str(tmp_path / "trainer.json"),
    }


def sh(script: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )


def calls(env: dict[str, str], tool: str = "") -> list[str]:
    log = Path(env["FAKE_LOG"])
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith(tool)]


def dry_run(script: Path, *args: str, env: dict[str, str]) -> list[str]:
    """Runs `script --dry-run args`, checks it succeeded and ran no command; returns its lines."""
    result = sh(script, "--dry-run", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert [c for c in calls(env) if not c.startswith("scontrol")] == []
    return result.stdout.splitlines()


TPU = ("--name", "s2s-v4", "--zone", "us-central2-b")
SCOPE = "s2s-v4 --zone=us-central2-b"
SSH_ALL = f"gcloud compute tpus tpu-vm ssh {SCOPE} --worker=all"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help(script, env):
    result = sh(script, "--help", env=env)
    assert result.returncode == 0 and result.stdout.startswith("Usage:")
    assert "--dry-run" in result.stdout and calls(env) == []


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            "--name s2s-v4 --zone us-central2-b --accelerator-type v4-32",
            f"gcloud compute tpus tpu-vm create {SCOPE} --accelerator-type=v4-32"
            " --version=tpu-ubuntu2204-base",
        ),
        (
            "--name=s2s-v5e --zone=us-west4-a --project my-proj --queued --spot"
            " --accelerator-type v5litepod-16",
            "gcloud compute tpus queued-resources create s2s-v5e --zone=us-west4-a"
            " --project=my-proj --node-id=s2s-v5e --accelerator-type=v5litepod-16"
            " --runtime-version=v2-alpha-tpuv5-lite --spot",
        ),
        (
            "--name s2s-v4 --zone us-central2-b --accelerator-type v6e-8 --version v2-alpha-tpuv6e"
            " --reserved --queued-resource qr-1 -- --network=my-net",
            "gcloud compute tpus queued-resources create qr-1 --zone=us-central2-b"
            " --node-id=s2s-v4 --accelerator-type=v6e-8 --runtime-version=v2-alpha-tpuv6e"
            " --reserved --network=my-net",
        ),
    ],
    ids=["tpu-vm", "queued-spot", "queued-reserved-passthrough"],
)
def test_create_commands(env, args, expected):
    assert dry_run(SETUP / "create.sh", *args.split(), env=env) == [expected]


def test_name_zone_project_from_environment(env):
    env |= {"S2S_TPU_NAME": "s2s-v4", "S2S_TPU_ZONE": "us-central2-b", "S2S_TPU_PROJECT": "p"}
    lines = dry_run(SETUP / "teardown.sh", env=env)
    assert lines == [f"gcloud compute tpus tpu-vm delete {SCOPE} --project=p"]


@pytest.mark.parametrize(
    "args,expected",
    [
        ([*TPU], f"gcloud compute tpus tpu-vm delete {SCOPE}"),
        ([*TPU, "--yes"], f"gcloud compute tpus tpu-vm delete {SCOPE} --quiet"),
        ([*TPU, "--queued"], f"gcloud compute tpus queued-resources delete {SCOPE} --force"),
        (
            [*TPU, "--queued-resource", "qr-1", "--yes"],
            "gcloud compute tpus queued-resources delete qr-1 --zone=us-central2-b --force --quiet",
        ),
    ],
    ids=["tpu-vm", "tpu-vm-yes", "queued", "queued-named"],
)
def test_teardown_commands(env, args, expected):
    assert dry_run(SETUP / "teardown.sh", *args, env=env) == [expected]


# The worker-side install that follows fetching the code, identical for both sources.
PIP_SETUP = (
    "python3 -m venv s2s_venv || { sudo apt-get update -q && sudo apt-get install -y -q"
    " python3-venv && python3 -m venv s2s_venv; }; s2s_venv/bin/pip install -q -U pip;"
    ' s2s_venv/bin/pip install -q -e ./s2s_jax "jax[tpu]";'
    ' s2s_venv/bin/python -c "import jax, s2s_jax" && echo "$(hostname): s2s_jax installed"'
)


def test_install_from_source_commands(env):
    tarball = f"{env['TMPDIR']}/s2s_jax-s2s-v4.tgz"
    lines = dry_run(SETUP / "install.sh", *TPU, "--source", ".", "--exclude", "*.ipynb", env=env)
    excludes = (
        "--exclude=.venv --exclude=runs --exclude=__pycache__ '--exclude=*.egg-info'"
        " --exclude=.pytest_cache --exclude=.ruff_cache --exclude=build --exclude=dist"
        " '--exclude=*.ipynb'"
    )
    unpack = "set -e; rm -rf s2s_jax; mkdir -p s2s_jax; tar -xzf s2s_jax.tgz -C s2s_jax;"
    assert lines == [
        f"tar -C . {excludes} -czf {tarball} .",
        f"gcloud compute tpus tpu-vm scp {tarball} s2s-v4:s2s_jax.tgz --zone=us-central2-b"
        " --worker=all",
        f"{SSH_ALL} {shlex.quote(f'--command={unpack} rm -f s2s_jax.tgz; {PIP_SETUP}')}",
        f"rm -f {tarball}",
    ]
    assert not Path(tarball).exists()


def test_install_from_repo_command(env):
    args = ["--repo", "https://github.com/org/s2s_jax.git", "--ref", "v1.2"]
    lines = dry_run(SETUP / "install.sh", *TPU, *args, env=env)
    fetch = (
        "set -e; rm -rf s2s_jax; git clone -q https://github.com/org/s2s_jax.git s2s_jax;"
        " git -C s2s_jax checkout -q v1.2;"
    )
    assert lines == [f"{SSH_ALL} {shlex.quote(f'--command={fetch} {PIP_SETUP}')}"]


OVERRIDES = ("--config.parallel.fsdp=4", "--config.name=a b")
LAUNCH = (
    *TPU,
    "--config",
    "experiments/reverse_transformer.py",
    "--workdir",
    "gs://bkt/runs/rt",
    "--env",
    "XLA_FLAGS=--xla_dump_to=/tmp/hlo",
    "--",
    *OVERRIDES,
)


def remote_command(line: str, worker: str = "all") -> str:
    """The shell command line a `gcloud ... ssh` line runs on the workers."""
    argv = shlex.split(line)
    assert argv[:8] == [*shlex.split(SSH_ALL)[:7], f"--worker={worker}"]
    assert len(argv) == 9 and argv[8].startswith("--command=")
    return argv[8].removeprefix("--command=")


def test_launch_command(env):
    [line] = dry_run(SETUP / "launch.sh", *LAUNCH, env=env)
    train = (
        "nohup env PYTHONUNBUFFERED=1 JAX_PLATFORMS=tpu XLA_FLAGS=--xla_dump_to=/tmp/hlo"
        " $HOME/s2s_venv/bin/s2s train --config experiments/reverse_transformer.py"
        " --workdir gs://bkt/runs/rt --config.parallel.distributed=true"
        " --config.parallel.fsdp=4 '--config.name=a b' >> logs/train.log 2>&1 < /dev/null &"
        " echo $! > logs/train.pid;"
    )
    assert train in remote_command(line)


@pytest.mark.parametrize(
    "args,worker,command",
    [
        (["--follow"], "0", "tail -n 100 -F logs/train.log"),
        (["--follow", "--worker", "all"], "all", "tail -n 100 -F logs/train.log"),
        (["--stop"], "all", 'kill -TERM "$(cat logs/train.pid)"'),
        (["--status"], "all", "tail -n 3 logs/train.log"),
    ],
)
def test_launch_follow_stop_status_commands(env, args, worker, command):
    [line] = dry_run(SETUP / "launch.sh", *TPU, *args, env=env)
    assert remote_command(line, worker).startswith("set -e; cd s2s_jax; mkdir -p logs; ")
    assert command in remote_command(line, worker)


def _wait_for(path: Path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_launch_runs_detached_on_a_worker_and_stops_on_sigterm(env, tmp_path):
    """Runs the launch, status and stop command lines with bash in a fake worker $HOME."""
    home = tmp_path / "home"
    (home / "s2s_jax").mkdir(parents=True)
    _write_exe(home / "s2s_venv" / "bin" / "s2s", FAKE_S2S)
    worker_env = env | {"HOME": str(home), "FAKE_S2S_WAIT": "1", "FAKE_LOG": str(home / "log")}
    out = Path(env["FAKE_S2S_OUT"])

    def on_worker(*args: str) -> subprocess.CompletedProcess:
        [line] = dry_run(SETUP / "launch.sh", *TPU, *args, env=env)
        command = remote_command(line, "all")
        return subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, env=worker_env, cwd=home
        )

    started = on_worker(*LAUNCH)
    try:
        assert started.returncode == 0, started.stderr
        _wait_for(out)
        record = json.loads(out.read_text())
        assert record["argv"] == [
            "train", "--config", "experiments/reverse_transformer.py", "--workdir",
            "gs://bkt/runs/rt", "--config.parallel.distributed=true", *OVERRIDES,
        ]  # fmt: skip
        assert record["env"] == {
            "PYTHONUNBUFFERED": "1",
            "JAX_PLATFORMS": "tpu",
            "JAX_LOCAL_DEVICE_IDS": None,
            "XLA_FLAGS": "--xla_dump_to=/tmp/hlo",
        }
        # The pid file names the trainer itself (not a wrapper shell), so --stop reaches it.
        assert int((home / "s2s_jax/logs/train.pid").read_text()) == record["pid"]
        again = on_worker(*LAUNCH)
        assert again.returncode == 1 and "already running" in again.stderr
        assert "worker-0: running" in on_worker("--status").stdout
        assert "sent SIGTERM" in on_worker("--stop").stdout
        _wait_for(Path(f"{out}.sigterm"))
    finally:
        if out.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(json.loads(out.read_text())["pid"], signal.SIGKILL)
    assert "--- launched" in (home / "s2s_jax/logs/train.log").read_text()


@pytest.mark.parametrize(
    "script,args",
    [
        ("create.sh", [*TPU, "--accelerator-type", "v4-32", "--queued", "--spot"]),
        ("teardown.sh", [*TPU, "--queued", "--yes"]),
        ("install.sh", [*TPU, "--repo", "https://github.com/org/s2s_jax.git"]),
        ("launch.sh", list(LAUNCH)),
        ("launch.sh", [*TPU, "--stop"]),
    ],
)
def test_real_run_makes_the_dry_run_calls(env, script, args):
    planned = dry_run(SETUP / script, *args, env=env)
    result = sh(SETUP / script, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert calls(env, "gcloud") == planned
    assert result.stderr.splitlines()[0] == f"+ {planned[0]}"  # echoed first, like set -x


def test_real_install_from_source_ships_the_checkout_without_local_state(env, tmp_path):
    source = tmp_path / "checkout"
    shipped = {"pyproject.toml", "s2s_jax/__init__.py", "experiments/x.py"}
    local_state = {".venv/bin/python", "runs/r/ckpt", "s2s_jax/__pycache__/m.pyc", "x.egg-info/A"}
    for name in shipped | local_state:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text("x")
    planned = dry_run(SETUP / "install.sh", *TPU, "--source", str(source), env=env)
    result = sh(SETUP / "install.sh", *TPU, "--source", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert calls(env, "gcloud") == [line for line in planned if line.startswith("gcloud")]
    with tarfile.open(env["FAKE_CAPTURE"]) as tar:
        files = {m.name.removeprefix("./") for m in tar.getmembers() if m.isfile()}
    assert files == shipped
    assert not Path(f"{env['TMPDIR']}/s2s_jax-s2s-v4.tgz").exists()  # local tarball removed


@pytest.mark.parametrize(
    "script,args,message",
    [
        ("create.sh", ["--zone", "z", "--accelerator-type", "v4-8"], "--name"),
        ("create.sh", ["--name", "n", "--accelerator-type", "v4-8"], "--zone"),
        ("create.sh", [*TPU], "--accelerator-type"),
        ("create.sh", [*TPU, "--accelerator-type", "x9-8"], "pass --version"),
        ("create.sh", [*TPU, "--accelerator-type", "v4-8", "--spot", "--reserved"], "--spot"),
        ("create.sh", ["--name", "--zone", "z"], "--name needs a value"),
        ("create.sh", [*TPU, "--accelerator-type"], "--accelerator-type needs a value"),
        ("teardown.sh", ["--name", "n"], "--zone"),
        ("teardown.sh", [*TPU, "--bogus"], "unknown option '--bogus'"),
        ("install.sh", [*TPU], "--source DIR or --repo URL"),
        ("install.sh", [*TPU, "--source", ".", "--repo", "u"], "exclude each other"),
        ("install.sh", [*TPU, "--source", "/"], "no pyproject.toml"),
        ("install.sh", [*TPU, "--source", ".", "--ref", "v1"], "--ref needs --repo"),
        ("install.sh", [*TPU, "--source", ".", "--venv", "/abs"], "--venv '/abs'"),
        ("install.sh", [*TPU, "--source", ".", "--jax", "x$(id)"], "--jax"),
        ("launch.sh", [*TPU, "--workdir", "gs://b/r"], "--config"),
        ("launch.sh", [*TPU, "--config", "e.py"], "--workdir"),
        ("launch.sh", [*TPU, "--config", "e.py", "--workdir", "/local"], "gs://"),
        ("launch.sh", [*LAUNCH[:8], "--env", "NOEQUALS"], "--env 'NOEQUALS'"),
        ("launch.sh", [*LAUNCH[:8], "--config.train.num_steps=5"], 'go after "--"'),
        ("launch.sh", [*TPU, "--stop", "--follow"], "exclude each other"),
        ("launch.sh", [*TPU, "--stop", "--", "--config.a=1"], "only go with a launch"),
        ("launch.sh", [*TPU, "--follow", "--worker", "one"], "--worker 'one'"),
    ],
)
def test_bad_arguments_fail_naming_the_problem(env, script, args, message):
    for dry in ([], ["--dry-run"]):
        result = sh(SETUP / script, *dry, *args, env=env)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert result.stdout == "" and calls(env) == []


SLURM_JOB = {
    "SLURM_JOB_ID": "4242",  # coordinator port 61440 + 4242 % 4096 = 61586, as JAX would pick
    "SLURM_JOB_NODELIST": "gpu[01-02]",
    "SLURM_GPUS_ON_NODE": "4",
}
TRAIN_ARGS = ("--config", "experiments/reverse_transformer.py", "--workdir", "/shared/runs/rt")


def srun_line(venv: Path, task: str, env_vars: str, num_processes: int) -> str:
    return (
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(task)} s2s-task env {env_vars}"
        f" {venv}/bin/s2s train --config experiments/reverse_transformer.py --workdir"
        " /shared/runs/rt --config.parallel.distributed=true"
        f" --config.parallel.coordinator_address=gpu01:61586"
        f" --config.parallel.num_processes={num_processes} --config.train.num_steps=5"
    )


RANK = 'exec "$@" --config.parallel.process_id="$SLURM_PROCID"'


@pytest.mark.parametrize(
    "tasks,task,env_vars,local_devices",
    [
        ("2", RANK, "JAX_LOCAL_DEVICE_IDS=0,1,2,3", "0,1,2,3"),  # one process per node
        ("8", f'export JAX_LOCAL_DEVICE_IDS="$SLURM_LOCALID"; {RANK}', "", "1"),  # per GPU
    ],
    ids=["per-node", "per-gpu"],
)
def test_slurm_srun_command_and_task_wrapper(env, tmp_path, tasks, task, env_vars, local_devices):
    venv = tmp_path / "venv"
    _write_exe(venv / "bin" / "s2s", FAKE_S2S)
    env |= SLURM_JOB | {"SLURM_NTASKS": tasks}
    args = [*TRAIN_ARGS, "--venv", str(venv), "--", "--config.train.num_steps=5"]
    planned = dry_run(SBATCH, *args, env=env)
    env_vars = f"PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda {env_vars}".strip()
    assert planned == [srun_line(venv, task, env_vars, int(tasks))]
    assert calls(env, "scontrol") == ["scontrol show hostnames 'gpu[01-02]'"]

    # A real run: the fake srun starts the command as task 1 (SLURM_PROCID=1, SLURM_LOCALID=1).
    result = sh(SBATCH, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert calls(env, "srun") == planned
    record = json.loads(Path(env["FAKE_S2S_OUT"]).read_text())
    assert record["argv"][-2:] == ["--config.train.num_steps=5", "--config.parallel.process_id=1"]
    assert record["env"]["JAX_LOCAL_DEVICE_IDS"] == local_devices
    assert record["env"]["JAX_PLATFORMS"] == "cuda"


@pytest.mark.parametrize(
    "job,message",
    [
        ({}, "not inside a SLURM job"),
        (SLURM_JOB | {"SLURM_NTASKS": "4"}, "--ntasks-per-node=1 (one process per node)"),
        (
            {k: v for k, v in SLURM_JOB.items() if k != "SLURM_GPUS_ON_NODE"}
            | {"SLURM_NTASKS": "2"},
            "SLURM_GPUS_ON_NODE is unset",
        ),
    ],
    ids=["outside-job", "tasks-not-per-node-or-gpu", "no-gpus"],
)
def test_slurm_bad_job_shapes(env, job, message):
    result = sh(SBATCH, "--dry-run", *TRAIN_ARGS, env=env | job)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert calls(env, "srun") == []


@pytest.mark.parametrize(
    "args,missing", [(TRAIN_ARGS[2:], "--config"), (TRAIN_ARGS[:2], "--workdir")]
)
def test_slurm_missing_arguments(env, args, missing):
    result = sh(SBATCH, *args, env=env | SLURM_JOB | {"SLURM_NTASKS": "2"})
    assert result.returncode == 2 and f"missing required argument {missing}" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["plain", "--config.x=1", "gs://b/r", "jax[tpu]", ""],
        ["a b", "it's", 'say "hi"', "$HOME", "~", "*.py", "x;y", "new\nline", "tab\there"],
    ],
    ids=["safe", "needs-quoting"],
)
def test_quote_matches_python_shlex(args):
    script = f'source {shlex.quote(str(SETUP / "common.sh"))}; quote "$@"'
    result = subprocess.run(["bash", "-c", script, "quote", *args], capture_output=True, text=True)
    assert result.stdout == shlex.join(args) + "\n"


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck binary not installed (apt-get install shellcheck); CI installs it")
    files = [SETUP / "common.sh", *SCRIPTS]
    result = subprocess.run(
        [shellcheck, "--external-sources", *map(str, files)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
