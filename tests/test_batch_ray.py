"""``python -m runtime.batch`` on Ray: a local two-worker Ray instance (loopback only) speaks a few hundred items of
the real voice; the whole job is killed and resumed, an actor is killed mid-job, and the result is the one an
uninterrupted job on this machine's processes writes, byte for byte."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, dev_sentences
from test_batch import _wait_for, batch, check_wavs, manifest, processes

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray's processes in /proc")


def _actors() -> list[int]:
    from runtime.batch.cluster import ACTOR_NAME

    return processes(ACTOR_NAME.encode())  # Ray sets it in the actor's command line


def _listening_beyond_loopback(pids: set[int]) -> list[str]:
    """TCP sockets in LISTEN of ``pids`` not bound to 127.0.0.1."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    wide = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes and not _address(local.split(":")[0]).is_loopback:
                wide.append(local)
    return wide


def _address(hexed: str):
    """An address of /proc/net/tcp{,6}: 32-bit words in the host's byte order (little-endian here)."""
    import ipaddress

    raw = b"".join(bytes.fromhex(hexed[k:k + 8])[::-1] for k in range(0, len(hexed), 8))
    address = ipaddress.ip_address(raw)
    return getattr(address, "ipv4_mapped", None) or address


def assert_same_bytes_as_the_local_pool(tmp_path: Path, voice, rows: list[dict], out: Path, some: list[str]) -> None:
    """The items ``some`` of ``tmp_path/in.jsonl`` from this machine's process pool, uninterrupted: the same bytes as
    the Ray job's ``rows`` in ``out`` (noise comes from each id)."""
    (tmp_path / "some.jsonl").write_text("".join(line for line in (tmp_path / "in.jsonl").read_text().splitlines(True)
                                                 if json.loads(line)["id"] in some))
    local = tmp_path / "local"
    proc = batch(tmp_path / "some.jsonl", "--voice", voice, "--out", local, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    by_id = {r["id"]: r for r in rows}
    for row in manifest(local):
        assert (local / row["path"]).read_bytes() == (out / by_id[row["id"]]["path"]).read_bytes(), row["id"]


def test_ray_job_resumes_survives_a_killed_actor_and_matches_the_local_pool(real_voice, tmp_path):
    sentences = dev_sentences()
    ids = [f"clip-{k:03d}" for k in range(240)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": sentences[k % len(sentences)]}) + "\n"
                                               for k, i in enumerate(ids))
                                       + json.dumps({"id": "blank", "text": " "}) + "\n")  # an item a worker refuses
    out = tmp_path / "ray"
    args = [tmp_path / "in.jsonl", "--voice", real_voice, "--out", out, "--workers", 2, "--batch-size", 4]

    # the whole job killed (driver, Ray's own processes and actors: one process group) after some items
    job = batch(*args, backend="ray", wait=False, start_new_session=True)
    try:
        _wait_for(lambda: len(manifest(out)) >= 30, 240, "the first items")
        actors = set(_actors())
        assert len(actors) == 2
        assert not _listening_beyond_loopback({job.pid, *actors}), "a local Ray instance listens on loopback only"
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    finally:
        job.kill()
    _wait_for(lambda: not _actors(), 30, "the killed job's actors to be gone")
    first = len(manifest(out))
    assert first < len(ids)

    # run again: it resumes; one actor SIGKILLed mid-way is restarted by Ray and its batch sent again
    job = batch(*args, backend=None, wait=False)  # left to choose: Ray, since it is installed
    try:
        _wait_for(lambda: len(manifest(out)) >= first + 30, 240, "the resumed job's first items")
        victim = _wait_for(_actors, 30, "an actor")[0]
        os.kill(victim, signal.SIGKILL)
        _, stderr = job.communicate(timeout=400)
    finally:
        job.kill()
    assert job.returncode == 1, stderr  # the blank item failed, said by the exit code and errors.jsonl
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["id"], "empty text" in e["error"]) for e in errors] == [("blank", True)]
    assert f"{first} already in" in stderr and "Ray actors" in stderr and "items/s" in stderr
    rows = manifest(out)
    assert sorted(r["id"] for r in rows) == ids  # none lost, none twice
    check_wavs(out, rows)
    assert not _actors(), "the job leaves no Ray processes behind"

    assert_same_bytes_as_the_local_pool(tmp_path, real_voice, rows, out, ids[::8])


def test_backend_choice_and_cluster_errors(exported, tmp_path):
    from runtime.batch.jobs import shape

    assert shape(None, None, [2]) == (2, 1) and shape(1, None, [2]) == (1, 2) and shape(None, 2, [8, 4]) == (6, 2)
    assert shape(3, None, [4, 4]) == (3, 2) and shape(2, 3, [2]) == (2, 3)
    voice = exported("char")
    (tmp_path / "in.txt").write_text("Hello.\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "errors.jsonl").write_text('{"id": "from the last run"}\n')
    start = time.monotonic()
    proc = batch(tmp_path / "in.txt", "--voice", voice, "--out", tmp_path / "out", "--address", "127.0.0.1:9", backend=None)
    assert proc.returncode == 2 and "could not join the Ray cluster at 127.0.0.1:9" in proc.stderr, proc.stderr
    assert time.monotonic() - start < 120
    assert (tmp_path / "out" / "errors.jsonl").read_text() == '{"id": "from the last run"}\n'  # a failed start loses nothing
    proc = batch(tmp_path / "in.txt", "--voice", voice, "--out", tmp_path / "out", "--address", "auto")
    assert proc.returncode == 2 and "needs --backend ray" in proc.stderr

    # without the cluster extra: the same command on this machine's processes, saying so
    run = ("import sys; sys.modules['ray'] = None; from runtime.batch.__main__ import main; "
           f"sys.exit(main([{str(tmp_path / 'in.txt')!r}, '--voice', {str(voice)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", run], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Ray is not installed" in proc.stderr and "local worker processes" in proc.stderr
    assert [r["id"] for r in manifest(tmp_path / "out")] == ["1"]


RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token"}  # token auth, Ray's default for new clusters: the driver sends the token


@contextlib.contextmanager
def ray_node(*args: str, env: dict):
    """``ray start ARGS --block`` in a session of its own (Ray's processes and its actors share it), SIGKILLed as a
    whole on the way out; yields the ``Popen``."""
    temp = tempfile.mkdtemp(prefix="ray-")  # short: Ray's unix socket paths must fit in 107 bytes
    node = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", *args, "--num-cpus=1",
                             f"--temp-dir={temp}", "--block"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_joins_a_running_cluster_by_its_address(exported, tmp_path):
    """``ray start --head`` (bound to loopback: Ray's single-machine switch), then the job with ``--address``."""
    from benchmarks.wyoming_servers import free_port

    port, env = free_port(), {**os.environ, **RAY_ENV}
    with ray_node("--head", f"--port={port}", "--include-dashboard=false", env=env) as head:
        _wait_for(lambda: head.poll() is not None or _answers(port), 120, "the Ray head")
        assert head.poll() is None, "ray start --head exited"
        (tmp_path / "in.txt").write_text("Hello there.\nGood night.\n")
        out = tmp_path / "out"
        proc = batch(tmp_path / "in.txt", "--voice", exported("char"), "--out", out, "--address", f"127.0.0.1:{port}",
                     backend=None, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "Ray actors on 1 node(s)" in proc.stderr and sorted(r["id"] for r in manifest(out)) == ["1", "2"]
        check_wavs(out, manifest(out))


# Two Ray nodes on this machine, on loopback: Ray's own test cluster (``ray start --address`` refuses a second node
# while Ray is held to loopback, and without that switch it listens on every interface). Prints the address and the
# second node's raylet, then holds the cluster until its stdin closes.
TWO_NODES = """
import json, os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
node = cluster.add_node(num_cpus=1)
print(json.dumps({"address": cluster.address, "raylet": node.all_processes["raylet"][0].process.pid}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def test_a_node_lost_mid_job_loses_and_doubles_nothing(real_voice, tmp_path):
    """A head and a second node, one actor on each; the second node (its raylet and its actor) SIGKILLed mid-job.
    The job ends on the head alone with every id once, and the WAVs are the bytes this machine's process pool
    writes."""
    sentences = dev_sentences()
    ids = [f"clip-{k:03d}" for k in range(120)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "text": sentences[k % len(sentences)]}) + "\n"
                                               for k, i in enumerate(ids)))
    out = tmp_path / "ray"
    cluster = subprocess.Popen([sys.executable, "-c", TWO_NODES], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        nodes = json.loads(cluster.stdout.readline())
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
        job = batch(tmp_path / "in.jsonl", "--voice", real_voice, "--out", out, "--address", nodes["address"],
                    "--batch-size", 2, backend=None, env=env, wait=False)
        try:
            _wait_for(lambda: len(manifest(out)) >= 20, 300, "the first items")
            from runtime.batch.cluster import ACTOR_NAME

            on_node = processes(ACTOR_NAME.encode(), parent=nodes["raylet"])
            assert len(on_node) == 1 and len(_actors()) == 2, "one actor on each node"
            assert not _listening_beyond_loopback({cluster.pid, nodes["raylet"], *_actors()})
            assert job.poll() is None
            for pid in (nodes["raylet"], *on_node):
                os.kill(pid, signal.SIGKILL)
            lost_at = len(manifest(out))
            _wait_for(lambda: len(_actors()) == 1, 30, "the lost node's actor to be gone")
            _, stderr = job.communicate(timeout=600)
        finally:
            job.kill()
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(timeout=30)
    assert job.returncode == 0, stderr[-3000:]
    assert "Ray actors on 2 node(s)" in stderr and lost_at < len(ids)
    rows = manifest(out)
    assert sorted(r["id"] for r in rows) == ids  # none lost, none twice
    check_wavs(out, rows)

    assert_same_bytes_as_the_local_pool(tmp_path, real_voice, rows, out, ids[::6])


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_batch_benchmark_quick_run(real_voice, tmp_path):
    """`python -m benchmarks.batch --quick`: the process pool and Ray on the real voice (structure, never speed)."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.batch", "--voice", str(real_voice), "--quick", "--out",
                           str(tmp_path / "report")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert set(results["summary"]) == {"local-1", "local-2", "ray-2"} and results["machine"]["cores"]
    for key, summary in results["summary"].items():
        assert summary["failed"] == 0 and summary["items_per_s"]["median"] > 0, key
        assert summary["vs_one_worker"]["median"] > 0 and summary["realtime"]["median"] > 0
    assert results["runs"]["ray-2"][0]["items"] == results["items"] == 12
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Ray, 2 actors x 1 thread" in text and "items/s (job)" in text
