"""``tfquant bench --device ssh:... | adb...``: against a real OpenSSH server on 127.0.0.1, and a
stand-in ``adb``.

The ssh tests start Debian's ``sshd`` on a free high port of 127.0.0.1 with a host key, a
client key and an ``authorized_keys`` made in a temporary directory, and stop it at the end:
the real ``ssh`` and ``scp`` talk to a real server. The benchmark binary is a **stand-in**, a
shell script, because LCE's ``lce_benchmark_model`` is an ARM binary that cannot be fetched
or run here: it prints LCE's output format (its timings depend on the
thread count and the model, so the table's speed-ups are known), and records its arguments,
its working directory and the bytes of the model it was given, so the tests check what
reached the "device".

No Android device can be reached here either, so ``adb`` is a **stand-in** too: a script
first on PATH that logs each call and carries out ``push`` / ``shell`` on this machine. The
test checks the sequence tfquant drives (get-state, probe, mkdir, push, chmod, runs, clean-up)
and the serial handling.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import conv_bn_dense, tfquant_cli

from tfquant._keras import keras
from tfquant.converters import convert, device
from tfquant.converters.flatbuffer import op_counts

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

# The stand-in for lce_benchmark_model. Average = 1000/threads us for a model, 4000/threads
# for a float twin (remote file names m1_*), so every speed-up is 4.00x.
STANDIN = """\
#!/bin/sh
# STAND-IN for LCE's lce_benchmark_model (an ARM binary that cannot run here): it records
# what it was given and prints LCE's output format.
rec={record}
n=$(ls "$rec" | grep -c '\\.args$')
graph=""; threads=1
for a in "$@"; do
  case "$a" in
    --graph=*) graph="${{a#--graph=}}" ;;
    --num_threads=*) threads="${{a#--num_threads=}}" ;;
  esac
done
printf '%s\\n' "$@" > "$rec/call$n.args"
pwd > "$rec/call$n.cwd"
echo "$0" > "$rec/call$n.exe"
cp "$graph" "$rec/call$n.model"
base=1000
case "$graph" in */m1_*) base=4000 ;; esac
echo "STARTING!"
echo "Num threads: [$threads]"
echo "Graph: [$graph]"
echo "Loaded model $graph"
echo "The input model file size (MB): 0.01"
echo "Inference timings in us: Init: 1471, First inference: 2000, Warmup (avg): 1500.5, \
Inference (avg): $((base / threads))"
"""

FAILING = "#!/bin/sh\necho 'ERROR: Failed to allocate tensors!' >&2\nexit 3\n"
UNPARSEABLE = "#!/bin/sh\necho 'STARTING!'\necho 'no timings today'\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


def _script(path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1:<free port>, for the user running the tests."""
    if not os.access(SSHD, os.X_OK):
        pytest.fail(
            f"{SSHD} not found: the ssh tests need Debian's openssh-server (scripts/setup "
            "installs it: apt-get install openssh-server)"
        )
    d = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(d / "host_key")
    client_pub = _keygen(d / "client_key")
    _keygen(d / "stranger_key")
    (d / "authorized_keys").write_text(client_pub + "\n")
    port = _free_port()
    (d / "sshd_config").write_text(
        textwrap.dedent(
            f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {d}/host_key
            PidFile {d}/sshd.pid
            AuthorizedKeysFile {d}/authorized_keys
            StrictModes no
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            PermitRootLogin prohibit-password
            Subsystem sftp internal-sftp
            LogLevel ERROR
            """
        )
    )
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    (d / "ssh_config").write_text(
        textwrap.dedent(
            f"""\
            Host *
              IdentityFile {d}/client_key
              IdentitiesOnly yes
              UserKnownHostsFile {d}/known_hosts
              StrictHostKeyChecking yes
              LogLevel ERROR
            """
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    log = open(d / "sshd.log", "wb")
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()[-2000:]}")
            time.sleep(0.1)
    user = getpass.getuser()
    yield {
        "dir": d,
        "port": port,
        "spec": f"ssh:{user}@127.0.0.1:{port}",
        "config": str(d / "ssh_config"),
    }
    server.terminate()
    server.wait(timeout=10)
    log.close()


@pytest.fixture(scope="module")
def tflite(tmp_path_factory):
    """A converted binary model (LceBconv2d) and a float model, as .tflite files."""
    d = tmp_path_factory.mktemp("models")
    binary = conv_bn_dense((8, 8, 3), 8, 4)
    (d / "binary.tflite").write_bytes(convert(binary))
    binary.save(d / "binary.keras")
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3)(inp)
    x = keras.layers.Dense(4)(keras.layers.Flatten()(x))
    (d / "float.tflite").write_bytes(convert(keras.Model(inp, x), allow_float=True))
    return d


@pytest.fixture
def record(tmp_path):
    r = tmp_path / "record"
    r.mkdir()
    return r


def _calls(record) -> list[dict]:
    out = []
    for i in range(len(list(record.glob("*.args")))):
        out.append(
            {
                "args": (record / f"call{i}.args").read_text().split(),
                "cwd": (record / f"call{i}.cwd").read_text().strip(),
                "exe": (record / f"call{i}.exe").read_text().strip(),
                "model": (record / f"call{i}.model").read_bytes(),
            }
        )
    return out


# ---------------------------------------------------------------------------------------------
# parsing


def test_parse_device_forms():
    assert device.parse_device("local") == device.Device("local")
    d = device.parse_device("ssh:pi@raspberrypi.local:2222")
    assert (d.kind, d.user, d.host, d.port) == ("ssh", "pi", "raspberrypi.local", 2222)
    assert str(d) == "ssh:pi@raspberrypi.local:2222"
    d = device.parse_device("ssh:mypi")  # an alias of ~/.ssh/config: user and port from there
    assert (d.user, d.host, d.port) == (None, "mypi", None)
    d = device.parse_device("ssh:u@[fe80::1]:22")
    assert (d.host, d.port) == ("fe80::1", 22)
    assert device.parse_device("adb") == device.Device("adb")
    assert device.parse_device("adb:emulator-5554").serial == "emulator-5554"
    for bad in ("", "ssh:", "ssh:@host", "ssh:a b", "adb:", "pi@host", "ssh:h:0", "ssh:h:70000"):
        with pytest.raises(ValueError, match="Expected"):
            device.parse_device(bad)


def test_parse_timings_and_elf(tmp_path):
    text = (
        "STARTING!\nInference timings in us: Init: 1471, First inference: 41707, "
        "Warmup (avg): 32491.4, Inference (avg): 31420.6\n"
    )
    assert device.parse_timings(text) == pytest.approx(
        {"init_ms": 1.471, "first_ms": 41.707, "warmup_ms": 32.4914, "inference_ms": 31.4206}
    )
    with pytest.raises(ValueError, match="Inference timings in us"):
        device.parse_timings("Segmentation fault")
    with pytest.raises(ValueError, match="Inference \\(avg\\)"):
        device.parse_timings("Inference timings in us: Init: 12")
    # ELF headers: aarch64 (183), arm (40); this interpreter is an x86_64 (or whatever) ELF.
    aarch64 = tmp_path / "a"
    aarch64.write_bytes(
        b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(40)
    )
    assert device.elf_machine(aarch64) == "aarch64"
    arm = tmp_path / "b"
    arm.write_bytes(b"\x7fELF\x01\x01\x01" + bytes(11) + (40).to_bytes(2, "little") + bytes(40))
    assert device.elf_machine(arm) == "arm"
    assert device.elf_machine(_script(tmp_path / "s", "#!/bin/sh\n")) is None
    assert device.elf_machine(os.path.realpath(sys.executable)) == {
        "x86_64": "x86_64",
        "aarch64": "aarch64",
    }.get(os.uname().machine, device.elf_machine(os.path.realpath(sys.executable)))


def test_markdown_table():
    rows = [
        {"model": "model", "threads": 1, "init_ms": 1.5, "first_ms": 2.0, "inference_ms": 1.0},
        {"model": "float twin", "threads": 1, "init_ms": 1.0, "first_ms": 5, "inference_ms": 4.0},
    ]
    table = device.markdown_table(rows).splitlines()
    assert table[0].startswith("| model | threads | init (ms) | first inference (ms)")
    assert table[2] == "| model | 1 | 1.50 | 2.00 | 1.00 | 4.00 | 4.00x |"
    assert len(table) == 3  # the twin is a column, not a row
    only = device.markdown_table(rows[:1]).splitlines()
    assert only[2] == "| model | 1 | 1.50 | 2.00 | 1.00 | - | - |"


# ---------------------------------------------------------------------------------------------
# ssh, against the real server


def test_ssh_bench_cli_times_model_and_twin(sshd, tflite, record, tmp_path):
    binary = _script(tmp_path / "lce_benchmark_model", STANDIN.format(record=record))
    before = set(glob.glob("/tmp/tfquant-bench-*"))
    out = tmp_path / "bench.json"
    proc = tfquant_cli(
        "bench", tflite / "binary.tflite", "--float-twin", tflite / "float.tflite",
        "--device", sshd["spec"], "--ssh-config", sshd["config"],
        "--benchmark-binary", binary, "--threads", "1,2,4", "--runs", "7",
        "--benchmark-arg=--use_indirect_bgemm=true", "--json", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{tflite / 'binary.tflite'} on {sshd['spec']} ({os.uname().machine})"
    assert lines[3:6] == [
        "| model | 1 | 1.47 | 2.00 | 1.00 | 4.00 | 4.00x |",
        "| model | 2 | 1.47 | 2.00 | 0.50 | 2.00 | 4.00x |",
        "| model | 4 | 1.47 | 2.00 | 0.25 | 1.00 | 4.00x |",
    ]
    calls = _calls(record)
    assert len(calls) == 6  # 2 models x 3 thread counts, in that order
    binary_bytes = (tflite / "binary.tflite").read_bytes()
    float_bytes = (tflite / "float.tflite").read_bytes()
    assert [c["model"] == binary_bytes for c in calls] == [True] * 3 + [False] * 3
    assert all(c["model"] == float_bytes for c in calls[3:])
    remote = os.path.dirname(calls[0]["exe"])
    assert remote.startswith("/tmp/tfquant-bench-") and calls[0]["exe"].endswith(
        "/lce_benchmark_model"
    )
    for c, threads in zip(calls, [1, 2, 4] * 2):
        assert c["args"][0].startswith(f"--graph={remote}/m")
        assert c["args"][1:] == [
            f"--num_threads={threads}",
            "--num_runs=7",
            "--use_indirect_bgemm=true",
        ]
    assert not os.path.exists(remote)  # the device's temporary directory is gone
    assert set(glob.glob("/tmp/tfquant-bench-*")) == before
    data = json.loads(out.read_text())
    assert data["device"] == sshd["spec"] and data["arch"] == os.uname().machine
    assert [(r["model"], r["threads"]) for r in data["rows"]] == [
        ("model", 1), ("model", 2), ("model", 4),
        ("float twin", 1), ("float twin", 2), ("float twin", 4),
    ]  # fmt: skip
    assert data["rows"][0]["init_ms"] == pytest.approx(1.471)


def test_ssh_bench_keras_model_converts_model_and_float_twin(sshd, tflite, record, tmp_path):
    binary = _script(tmp_path / "lce_benchmark_model", STANDIN.format(record=record))
    proc = tfquant_cli(
        "bench", tflite / "binary.keras", "--device", sshd["spec"], "--ssh-config",
        sshd["config"], "--benchmark-binary", binary, "--threads", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| model | 2 | 1.47 | 2.00 | 0.50 | 2.00 | 4.00x |" in proc.stdout
    model, twin = (c["model"] for c in _calls(record))
    assert op_counts(model).get("LceBconv2d") == 1  # the binary conv, bit-packed
    assert "LceBconv2d" not in op_counts(twin) and op_counts(twin).get("CONV_2D") == 1
    assert "converting the float twin" in proc.stderr


def _bench(sshd, binary, tmp_path, **kwargs):
    return device.benchmark(
        device.parse_device(kwargs.pop("spec", sshd["spec"])),
        {"model": str(kwargs.pop("model"))},
        binary,
        threads=[1],
        device_dir=str(tmp_path / "device"),
        ssh_config=sshd["config"],
        **kwargs,
    )


@pytest.fixture
def device_dir(tmp_path):
    d = tmp_path / "device"
    d.mkdir()
    yield d
    assert os.listdir(d) == []  # whatever happened, nothing is left on the device


def test_ssh_wrong_key_is_refused(sshd, tflite, record, tmp_path, device_dir):
    binary = _script(tmp_path / "bm", STANDIN.format(record=record))
    config = tmp_path / "config"
    config.write_text(open(sshd["config"]).read().replace("client_key", "stranger_key"))
    with pytest.raises(device.DeviceError, match="authentication refused by 127.0.0.1"):
        device.benchmark(
            device.parse_device(sshd["spec"]),
            {"model": str(tflite / "binary.tflite")},
            binary,
            device_dir=str(device_dir),
            ssh_config=str(config),
        )
    proc = tfquant_cli(
        "bench", tflite / "binary.tflite", "--device", sshd["spec"], "--ssh-config", config,
        "--benchmark-binary", binary,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: authentication refused" in proc.stderr and "ssh-copy-id" in proc.stderr
    assert _calls(record) == []


def test_ssh_unreachable_host(sshd, tflite, tmp_path, device_dir):
    binary = _script(tmp_path / "bm", FAILING)
    spec = f"ssh:nobody@127.0.0.1:{_free_port()}"  # nothing listens there
    with pytest.raises(device.DeviceError, match="cannot reach ssh:nobody@127.0.0.1:.*refused"):
        _bench(sshd, binary, tmp_path, spec=spec, model=tflite / "binary.tflite")


def test_ssh_failing_binary(sshd, tflite, tmp_path, device_dir):
    binary = _script(tmp_path / "bm", FAILING)
    with pytest.raises(
        device.DeviceError, match="bm exited with status 3 on .*Failed to allocate tensors"
    ):
        _bench(sshd, binary, tmp_path, model=tflite / "binary.tflite")


def test_ssh_unparseable_output(sshd, tflite, tmp_path, device_dir):
    binary = _script(tmp_path / "bm", UNPARSEABLE)
    with pytest.raises(device.DeviceError, match="cannot parse the output .*no timings today"):
        _bench(sshd, binary, tmp_path, model=tflite / "binary.tflite")


def test_ssh_binary_for_another_architecture(sshd, tflite, tmp_path, device_dir):
    # An aarch64 ELF header: refused here, before anything is copied (the device says x86_64).
    other = "arm" if os.uname().machine == "aarch64" else "aarch64"
    code = 183 if other == "aarch64" else 40
    binary = tmp_path / "lce_benchmark_model_aarch64"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + code.to_bytes(2, "little") + bytes(60))
    with pytest.raises(
        device.DeviceError, match=f"built for {other} but .* is {os.uname().machine}"
    ):
        _bench(sshd, str(binary), tmp_path, model=tflite / "binary.tflite")


def test_ssh_exec_format_error_on_the_device(sshd, tflite, tmp_path, device_dir):
    # An ELF of this machine's architecture that the kernel cannot load (truncated): the
    # device's own "Exec format error" is recognised.
    own = (62 if os.uname().machine == "x86_64" else 183).to_bytes(2, "little")
    binary = tmp_path / "truncated"
    binary.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + own + b"\x00\x01" * 10)
    with pytest.raises(device.DeviceError, match="Exec format error"):
        _bench(sshd, str(binary), tmp_path, model=tflite / "binary.tflite")


def test_ssh_missing_binary_and_bad_arguments(sshd, tflite, tmp_path):
    proc = tfquant_cli(
        "bench", tflite / "binary.tflite", "--device", sshd["spec"],
        "--benchmark-binary", tmp_path / "nope",
    )  # fmt: skip
    assert proc.returncode == 2 and "benchmark binary not found" in proc.stderr
    proc = tfquant_cli("bench", tflite / "binary.tflite", "--device", sshd["spec"])
    assert proc.returncode == 2 and "needs --benchmark-binary" in proc.stderr
    proc = tfquant_cli("bench", tflite / "binary.tflite", "--device", "ssh:")
    assert proc.returncode == 2 and "Expected a device local, ssh:" in proc.stderr
    proc = tfquant_cli("bench", tflite / "binary.tflite", "--threads", "1,1")
    assert proc.returncode == 2 and "Expected distinct thread counts" in proc.stderr


# ---------------------------------------------------------------------------------------------
# adb (stand-in)

# STAND-IN for Android's adb: no phone can be reached from this machine. It logs each call
# (argv as JSON) and carries out `push` and `shell` on this machine; devices and their states
# come from STANDIN_ADB_DEVICES ("serial=state,...").
ADB = """\
#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["STANDIN_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
devices = dict(d.split("=") for d in os.environ.get("STANDIN_ADB_DEVICES", "").split(",") if d)
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if serial is None:
    if not devices:
        sys.exit(print("error: no devices/emulators found", file=sys.stderr) or 1)
    if len(devices) > 1:
        sys.exit(print("error: more than one device/emulator", file=sys.stderr) or 1)
    serial = next(iter(devices))
if serial not in devices:
    sys.exit(print(f"error: device '{{serial}}' not found", file=sys.stderr) or 1)
if args[0] == "get-state":
    state = devices[serial]
    if state != "device":
        sys.exit(print(f"error: device {{state}}", file=sys.stderr) or 1)
    print(state)
elif args[0] == "push":
    shutil.copyfile(args[1], args[2])
    print(f"{{args[1]}}: 1 file pushed")
elif args[0] == "shell":
    sys.exit(subprocess.run(["sh", "-c", " ".join(args[1:])]).returncode)
else:
    sys.exit(f"stand-in adb: unsupported command {{args}}")
"""


@pytest.fixture
def adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "adb-bin"
    bin_dir.mkdir()
    _script(bin_dir / "adb", ADB.format(python=sys.executable))
    log = tmp_path / "adb.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_ADB_LOG", str(log))
    monkeypatch.setenv("STANDIN_ADB_DEVICES", "R58M123=device,emulator-5554=device")
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def test_adb_sequence_and_serial(adb, tflite, record, tmp_path, device_dir):
    binary = _script(tmp_path / "lce_benchmark_model", STANDIN.format(record=record))
    out = tmp_path / "b.json"
    proc = tfquant_cli(
        "bench", tflite / "binary.tflite", "--float-twin", tflite / "float.tflite",
        "--device", "adb:R58M123", "--benchmark-binary", binary, "--threads", "1,4",
        "--device-dir", device_dir, "--json", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| model | 4 | 1.47 | 2.00 | 0.25 | 1.00 | 4.00x |" in proc.stdout
    calls = adb()
    assert all(c[:2] == ["-s", "R58M123"] for c in calls)  # every call names the serial
    verbs = [c[2] if c[2] != "shell" else "shell " + c[3].split()[0] for c in calls]
    remote = calls[2][3].split()[-1]
    assert remote.startswith(f"{device_dir}/tfquant-bench-")
    assert verbs == [
        "get-state",
        "shell uname",
        "shell mkdir",
        "push",  # the binary
        "shell chmod",
        "push",  # the model
        "push",  # its float twin
        *[f"shell {remote}/lce_benchmark_model"] * 4,  # 2 models x 2 thread counts
        "shell rm",
    ]
    assert calls[3][3:] == [binary, f"{remote}/lce_benchmark_model"]
    ran = _calls(record)
    assert [r["model"] == (tflite / "binary.tflite").read_bytes() for r in ran] == [
        True, True, False, False,
    ]  # fmt: skip
    assert json.loads(out.read_text())["device"] == "adb:R58M123"


def test_adb_device_errors(adb, tflite, tmp_path, monkeypatch, device_dir):
    binary = _script(tmp_path / "bm", FAILING)
    model = {"model": str(tflite / "binary.tflite")}
    with pytest.raises(device.DeviceError, match="several Android devices .* adb:SERIAL"):
        device.benchmark(device.parse_device("adb"), model, binary, device_dir=str(device_dir))
    with pytest.raises(device.DeviceError, match="no device 'nope' reachable"):
        device.benchmark(device.parse_device("adb:nope"), model, binary, device_dir=str(device_dir))
    monkeypatch.setenv("STANDIN_ADB_DEVICES", "R58M123=unauthorized")
    with pytest.raises(device.DeviceError, match="accept the USB debugging prompt"):
        device.benchmark(device.parse_device("adb"), model, binary, device_dir=str(device_dir))
    monkeypatch.setenv("STANDIN_ADB_DEVICES", "")
    with pytest.raises(device.DeviceError, match="no Android device reachable"):
        device.benchmark(device.parse_device("adb"), model, binary, device_dir=str(device_dir))
    monkeypatch.setenv("STANDIN_ADB_DEVICES", "R58M123=device")
    with pytest.raises(device.DeviceError, match="bm exited with status 3"):
        device.benchmark(device.parse_device("adb"), model, binary, device_dir=str(device_dir))
    assert [c[0] for c in adb()][-1] == "shell" and adb()[-1][1].startswith("rm -rf")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(device.DeviceError, match="adb not found on PATH"):
        device.benchmark(device.parse_device("adb"), model, binary, device_dir=str(device_dir))


def test_android_demo_wrapper_runs_the_cli(adb, tflite, record, tmp_path, device_dir):
    script = os.path.join(os.path.dirname(__file__), "..", "android_demo", "benchmark_device.sh")
    binary = _script(tmp_path / "lce_benchmark_model", STANDIN.format(record=record))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        ["bash", script, "adb:emulator-5554", str(tflite / "binary.tflite"), binary, "2"]
        + ["--device-dir", str(device_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| model | 2 | 1.47 | 2.00 | 0.50 | - | - |" in proc.stdout
    assert all(c[:2] == ["-s", "emulator-5554"] for c in adb())
    usage = subprocess.run(["bash", script, "adb"], capture_output=True, text=True)
    assert usage.returncode == 2 and "DEVICE MODEL LCE_BENCHMARK_BINARY" in usage.stderr
