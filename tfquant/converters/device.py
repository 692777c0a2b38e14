"""Latency on a device: Larq Compute Engine's ``lce_benchmark_model`` over ssh (a Raspberry Pi,
any aarch64 Linux board) or adb (an Android phone).

:func:`benchmark` copies the benchmark binary and the models into a new temporary directory
on the device, runs the binary once per model and thread count, parses its
``Inference timings in us: ...`` line, and removes the directory whatever happens. It drives
the system's OpenSSH client (``ssh``, ``scp``) and ``adb``, so ``~/.ssh/config``, keys and
agents work exactly as in a terminal. ssh runs with ``BatchMode=yes``: a host that wants a
password is refused at once instead of waiting for one.

Example (a Raspberry Pi with LCE's aarch64 binary):

>>> from tfquant.converters import device
>>> rows = device.benchmark(                                           # doctest: +SKIP
...     device.parse_device("ssh:pi@raspberrypi"),
...     {"model": "m.tflite", "float twin": "m_float.tflite"},
...     binary="lce_benchmark_model_aarch64", threads=[1, 2, 4])
>>> print(device.markdown_table(rows))                                  # doctest: +SKIP

Every failure is a :class:`DeviceError` whose message says what went wrong and what to do:
the host unreachable, authentication refused, no ``adb`` or no device, a binary built for
another architecture, a non-zero exit on the device, output without a timing line.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from tfquant.errors import TfquantError

__all__ = [
    "Device",
    "DeviceError",
    "parse_device",
    "parse_timings",
    "elf_machine",
    "benchmark",
    "markdown_table",
]

SPEC_HELP = "local, ssh:[USER@]HOST[:PORT] or adb[:SERIAL]"


class DeviceError(TfquantError, RuntimeError):
    """The device could not be reached or the benchmark failed on it."""


@dataclasses.dataclass(frozen=True)
class Device:
    """Where to benchmark: ``kind`` is ``"local"``, ``"ssh"`` or ``"adb"``."""

    kind: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    serial: str | None = None

    def __str__(self) -> str:
        if self.kind == "ssh":
            user = f"{self.user}@" if self.user else ""
            host = f"[{self.host}]" if self.host and ":" in self.host else self.host
            port = f":{self.port}" if self.port else ""
            return f"ssh:{user}{host}{port}"
        if self.kind == "adb":
            return f"adb:{self.serial}" if self.serial else "adb"
        return "local"


_HOST = re.compile(r"^[A-Za-z0-9_.-]+$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SERIAL = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_device(spec: str) -> Device:
    """``"local"``, ``"ssh:[USER@]HOST[:PORT]"`` (HOST may be an alias of ``~/.ssh/config``;
    an IPv6 address goes in brackets: ``ssh:pi@[fe80::1]:22``) or ``"adb[:SERIAL]"``.

    Raises:
        ValueError: any other form, e.g. ``"ssh:"``, a port outside 1..65535.
    """
    bad = f"Expected a device {SPEC_HELP}. Received: {spec!r}"
    if spec == "local":
        return Device("local")
    if spec == "adb":
        return Device("adb")
    if spec.startswith("adb:"):
        serial = spec[4:]
        if not _SERIAL.match(serial):
            raise ValueError(bad)
        return Device("adb", serial=serial)
    if not spec.startswith("ssh:"):
        raise ValueError(bad)
    rest = spec[4:]
    user, at, hostport = rest.rpartition("@")
    if at and not _USER.match(user):
        raise ValueError(bad)
    port_text = None
    if hostport.startswith("["):  # [IPv6]:port
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or not host or not re.match(r"^[0-9A-Fa-f:.%]+$", host):
            raise ValueError(bad)
        if tail:
            if not tail.startswith(":"):
                raise ValueError(bad)
            port_text = tail[1:]
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if not _HOST.match(host):
            raise ValueError(bad)
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"Expected a port in 1..65535. Received: {spec!r}")
        port = int(port_text)
    return Device("ssh", host=host, user=user or None, port=port)


# ---------------------------------------------------------------------------------------------
# The benchmark binary's output and architecture

_TIMINGS = re.compile(r"Inference timings in us: (.*)")
_TIMING_KEYS = {
    "Init": "init_ms",
    "First inference": "first_ms",
    "Warmup (avg)": "warmup_ms",
    "Inference (avg)": "inference_ms",
}


def parse_timings(text: str) -> dict[str, float]:
    """The last ``Inference timings in us: Init: 1471, First inference: 41707, Warmup (avg):
    32491.4, Inference (avg): 31420.6`` line of (lce_)benchmark_model's output, in ms.

    Raises:
        ValueError: no such line, or one without ``Inference (avg)``.
    """
    found = _TIMINGS.findall(text)
    if not found:
        raise ValueError("Expected a line 'Inference timings in us: ...'. Received: none")
    out: dict[str, float] = {}
    for part in found[-1].split(","):
        name, _, value = part.partition(":")
        key = _TIMING_KEYS.get(name.strip())
        if key is None:
            continue
        try:
            out[key] = float(value) / 1000.0
        except ValueError:
            raise ValueError(
                f"Expected a number of microseconds after {name.strip()!r}. "
                f"Received: {value.strip()!r}"
            ) from None
    if "inference_ms" not in out:
        raise ValueError(
            f"Expected 'Inference (avg)' in the timing line. Received: {found[-1].strip()!r}"
        )
    return out


# ELF e_machine values and the `uname -m` names of the same architecture.
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64"}
_UNAME = {
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "arm",
    "armv8l": "arm",
    "armv6l": "arm",
    "arm": "arm",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i686": "x86",
    "i386": "x86",
    "riscv64": "riscv64",
}


# A 64-bit kernel that may also run 32-bit binaries of its family (Raspberry Pi OS's 32-bit
# userland on an arm64 kernel; an aarch64 core without AArch32 then says "Exec format error").
_ALSO_RUNS = {"aarch64": {"arm"}, "x86_64": {"x86"}}


def elf_machine(path: str | os.PathLike) -> str | None:
    """The architecture an ELF executable is built for (``"aarch64"``, ``"arm"``,
    ``"x86_64"``, ...), or ``None`` when the file is not ELF (a script, say)."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order: Literal["little", "big"] = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], order)
    return _ELF_MACHINES.get(machine, f"e_machine {machine}")


# ---------------------------------------------------------------------------------------------
# Transports: ssh and adb


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(kept[-lines:])[:500] if kept else "(no output)"


class _Transport:
    name: str
    default_dir: str

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def push(self, local: str, remote: str, timeout: float) -> None:
        raise NotImplementedError

    def _call(self, argv: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise DeviceError(
                f"{what} on {self.name} did not finish within {timeout:g} s and was stopped "
                "(a slower device needs a larger --timeout)"
            ) from None
        except FileNotFoundError as e:
            raise DeviceError(f"cannot run {argv[0]!r}: {e.strerror}") from None


class _Ssh(_Transport):
    default_dir = "/tmp"

    def __init__(
        self,
        device: Device,
        config: str | None = None,
        options: Sequence[str] = (),
        connect_timeout: int = 15,
    ) -> None:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise DeviceError(
                    f"{tool} not found on PATH: install OpenSSH's client "
                    "(Debian: apt-get install openssh-client)"
                )
        self.device = device
        self.name = str(device)
        common = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}"]
        if config:
            common = ["-F", config, *common]
        for option in options:
            common += ["-o", option]
        self._common = common
        if device.host is None:
            raise DeviceError(f"Expected an ssh device with a host. Received: {device!r}")
        self._target = f"{device.user}@{device.host}" if device.user else device.host

    def _ssh_argv(self, command: str) -> list[str]:
        port = ["-p", str(self.device.port)] if self.device.port else []
        return ["ssh", *self._common, *port, self._target, command]

    def _connection_error(self, stderr: str) -> DeviceError | None:
        """ssh's (or scp's) own failure to connect or log in, or None when ``stderr`` shows
        none (a remote command's error, say)."""
        host = self.device.host
        # "user@host: Permission denied (publickey)."; not scp's "dest open ...: Permission
        # denied", a file the user may not write
        if re.search(r"Permission denied \(|Too many authentication failures", stderr):
            return DeviceError(
                f"authentication refused by {host}: {_tail(stderr, 1)} (tfquant runs ssh with "
                "BatchMode=yes, without password prompts: set up a key, e.g. ssh-copy-id, or an "
                "agent, so that `ssh HOST true` works without typing a password)"
            )
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION" in stderr:
            return DeviceError(
                f"the host key of {host} is unknown or has changed: connect once with ssh to "
                f"check and accept it ({_tail(stderr, 1)})"
            )
        if re.search(
            r"Connection refused|Connection timed out|No route to host|Network is unreachable"
            r"|Could not resolve hostname|Name or service not known|Connection closed"
            r"|Connection reset|kex_exchange_identification",
            stderr,
        ):
            return DeviceError(f"cannot reach {self.name}: {_tail(stderr, 1)}")
        return None

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        proc = self._call(self._ssh_argv(command), timeout, "a command")
        if proc.returncode == 255:  # ssh's own failure; a remote command's status passes through
            raise self._connection_error(proc.stderr) or DeviceError(
                f"ssh to {self.name} failed (exit 255): {_tail(proc.stderr)}"
            )
        return proc

    def push(self, local: str, remote: str, timeout: float) -> None:
        port = ["-P", str(self.device.port)] if self.device.port else []
        host = self._target
        if self.device.host and ":" in self.device.host:  # IPv6 in scp's syntax
            host = (f"{self.device.user}@" if self.device.user else "") + f"[{self.device.host}]"
        argv = ["scp", "-q", *self._common, *port, local, f"{host}:{remote}"]
        proc = self._call(argv, timeout, "copying")
        if proc.returncode != 0:
            raise self._connection_error(proc.stderr) or DeviceError(
                f"cannot copy {os.path.basename(local)} to {self.name}:{remote}: "
                f"{_tail(proc.stderr)}"
            )


class _Adb(_Transport):
    default_dir = "/data/local/tmp"

    def __init__(self, device: Device) -> None:
        adb = shutil.which("adb")
        if adb is None:
            raise DeviceError(
                "adb not found on PATH: install Android's platform-tools "
                "(Debian: apt-get install adb) and connect the phone with USB debugging on"
            )
        self.device = device
        self.name = str(device)
        self._prefix = [adb, *(["-s", device.serial] if device.serial else [])]

    def check(self, timeout: float) -> None:
        proc = self._call([*self._prefix, "get-state"], timeout, "adb get-state")
        state = proc.stdout.strip()
        if proc.returncode == 0 and state == "device":
            return
        err = (proc.stderr + proc.stdout).strip()
        if "more than one" in err:
            raise DeviceError(
                f"several Android devices are connected: pick one with adb:SERIAL "
                f"(`adb devices` lists them) ({_tail(err, 1)})"
            )
        if "unauthorized" in err or state == "unauthorized":
            raise DeviceError(
                f"{self.name}: the device has not authorised this computer: accept the USB "
                "debugging prompt on the phone"
            )
        which = f"device {self.device.serial!r}" if self.device.serial else "Android device"
        raise DeviceError(
            f"no {which} reachable through adb: {_tail(err, 1) if err else state!r} "
            "(`adb devices` lists what adb sees)"
        )

    def run(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        # adb (platform-tools 24+) passes the remote command's exit status through.
        return self._call([*self._prefix, "shell", command], timeout, "a command")

    def push(self, local: str, remote: str, timeout: float) -> None:
        proc = self._call([*self._prefix, "push", local, remote], timeout, "adb push")
        if proc.returncode != 0:
            raise DeviceError(
                f"cannot copy {os.path.basename(local)} to {self.name}:{remote}: "
                f"{_tail(proc.stderr + proc.stdout)}"
            )


# ---------------------------------------------------------------------------------------------
# The benchmark


def _safe_name(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(path)) or "benchmark_model"
    return name if not name.startswith("-") else "_" + name


def _run_failure(transport: _Transport, binary: str, model: str, proc) -> DeviceError:
    out = (proc.stdout or "") + (proc.stderr or "")
    code = proc.returncode
    if "Exec format error" in out or "cannot execute binary file" in out:
        return DeviceError(
            f"{binary} cannot run on {transport.name}: Exec format error (it is built for "
            "another architecture, or is not an executable: use LCE's build for the device)"
        )
    if code == 126:
        return DeviceError(
            f"{transport.name} refused to execute {binary} ({_tail(out, 1)}): the temporary "
            "directory may be on a noexec mount; pick another with --device-dir"
        )
    if code == 127:
        return DeviceError(
            f"{binary} cannot start on {transport.name} ({_tail(out, 1)}): a dynamically linked "
            "binary whose libraries or loader the device lacks (an Android build on Linux, or "
            "the reverse)"
        )
    return DeviceError(
        f"{binary} exited with status {code} on {transport.name} for {model}: {_tail(out)}"
    )


def benchmark(
    device: Device,
    models: Mapping[str, str | os.PathLike],
    binary: str | os.PathLike,
    threads: Sequence[int] = (1, 2, 4),
    runs: int | None = None,
    warmup: int | None = None,
    extra_args: Mapping[str, Sequence[str]] | None = None,
    device_dir: str | None = None,
    ssh_config: str | None = None,
    ssh_options: Sequence[str] = (),
    timeout: float = 600.0,
    progress: Callable[[str], Any] | None = None,
) -> dict:
    """Time ``models`` (name -> ``.tflite`` path) on ``device`` with ``binary``.

    Args:
        device: from :func:`parse_device`, kind ``"ssh"`` or ``"adb"``.
        models: e.g. ``{"model": "m.tflite", "float twin": "f.tflite"}``; timed in order.
        binary: this machine's copy of the device's ``lce_benchmark_model`` (LCE's releases:
            Android arm64 and aarch64 Linux), or TensorFlow Lite's ``benchmark_model`` for
            models without Lce ops.
        threads: thread counts; one run of the binary each (``--num_threads``).
        runs, warmup: ``--num_runs`` / ``--warmup_runs`` (the binary's defaults when None).
        extra_args: per model name, more flags (e.g. ``--use_indirect_bgemm=true``).
        device_dir: where the temporary directory goes (``/tmp`` over ssh,
            ``/data/local/tmp`` over adb).
        ssh_config, ssh_options: ``ssh -F FILE`` and ``-o OPTION`` (for both ssh and scp).
        timeout: seconds for each command on the device.
        progress: called with a line per step (e.g. ``print`` to stderr).

    Returns:
        ``{"device", "arch", "binary", "rows": [{"model", "threads", "init_ms", "first_ms",
        "warmup_ms", "inference_ms"}, ...]}``.

    Raises:
        DeviceError: as described in the module docstring; the device's temporary directory
            is removed before it propagates (and on KeyboardInterrupt).
        FileNotFoundError: ``binary`` or a model is not a file here.
    """
    say = progress or (lambda line: None)
    binary = os.fspath(binary)
    for path in [binary, *(os.fspath(model) for model in models.values())]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Expected a file. Received: {path!r} (not found)")
    if device.kind == "ssh":
        transport: _Transport = _Ssh(device, ssh_config, ssh_options)
    elif device.kind == "adb":
        transport = _Adb(device)
        transport.check(timeout)
    else:
        raise ValueError(f"Expected a device of kind 'ssh' or 'adb'. Received: {device.kind!r}")

    say(f"connecting to {transport.name}")
    probe = transport.run("uname -m", timeout)
    arch = probe.stdout.strip().splitlines()[-1] if probe.stdout.strip() else "unknown"
    if probe.returncode != 0:
        raise DeviceError(f"`uname -m` failed on {transport.name}: {_tail(probe.stderr)}")
    built_for = elf_machine(binary)
    compatible = {_UNAME.get(arch, arch)} | _ALSO_RUNS.get(_UNAME.get(arch, arch), set())
    if built_for is not None and built_for not in compatible:
        raise DeviceError(
            f"{binary} is built for {built_for} but {transport.name} is {arch} (uname -m): "
            "use LCE's lce_benchmark_model for the device's architecture"
        )

    base = device_dir or transport.default_dir
    remote = posixpath.join(base, f"tfquant-bench-{secrets.token_hex(6)}")
    quoted = shlex.quote(remote)
    made = transport.run(f"mkdir -m 700 {quoted}", timeout)
    if made.returncode != 0:
        raise DeviceError(
            f"cannot make {remote} on {transport.name}: {_tail(made.stderr + made.stdout)} "
            "(pick a writable directory with --device-dir)"
        )
    rows = []
    try:
        exe = f"{remote}/{_safe_name(binary)}"
        say(f"copying {os.path.basename(binary)} and {len(models)} model(s) to {remote}")
        transport.push(binary, exe, timeout)
        chmod = transport.run(f"chmod 755 {shlex.quote(exe)}", timeout)
        if chmod.returncode != 0:
            raise DeviceError(f"cannot chmod {exe} on {transport.name}: {_tail(chmod.stderr)}")
        remote_models = {}
        for i, (name, path) in enumerate(models.items()):
            remote_models[name] = f"{remote}/m{i}_{_safe_name(os.fspath(path))}"
            transport.push(os.fspath(path), remote_models[name], timeout)
        for name, graph in remote_models.items():
            for n in threads:
                flags = [f"--graph={graph}", f"--num_threads={int(n)}"]
                if runs is not None:
                    flags.append(f"--num_runs={int(runs)}")
                if warmup is not None:
                    flags.append(f"--warmup_runs={int(warmup)}")
                flags += list((extra_args or {}).get(name, ()))
                say(f"{name}: {int(n)} thread(s)")
                command = " ".join(shlex.quote(a) for a in [exe, *flags]) + " 2>&1"
                proc = transport.run(command, timeout)
                if proc.returncode != 0:
                    raise _run_failure(transport, os.path.basename(binary), name, proc)
                try:
                    timings = parse_timings(proc.stdout)
                except ValueError as e:
                    raise DeviceError(
                        f"cannot parse the output of {os.path.basename(binary)} on "
                        f"{transport.name} for {name}: {e}; its last lines: {_tail(proc.stdout)}"
                    ) from None
                rows.append({"model": name, "threads": int(n), **timings})
    finally:
        try:
            gone = transport.run(f"rm -rf {quoted}", min(timeout, 60.0))
            if gone.returncode != 0:
                print(
                    f"warning: could not remove {remote} on {transport.name}: {_tail(gone.stderr)}",
                    file=sys.stderr,
                )
        except DeviceError as e:
            print(f"warning: could not remove {remote} on {transport.name}: {e}", file=sys.stderr)
    return {"device": transport.name, "arch": arch, "binary": binary, "rows": rows}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown_table(rows: Sequence[dict], baseline: str = "float twin") -> str:
    """A Markdown table: model, threads, init, first inference, average, the ``baseline``
    model's average at the same thread count, and the speed-up over it."""
    base = {r["threads"]: r["inference_ms"] for r in rows if r["model"] == baseline}
    lines = [
        "| model | threads | init (ms) | first inference (ms) | average (ms) "
        f"| {baseline} average (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["model"] == baseline:
            continue
        ref = base.get(r["threads"])
        speedup = f"{ref / r['inference_ms']:.2f}x" if ref and r["inference_ms"] else "-"
        lines.append(
            f"| {r['model']} | {r['threads']} | {_ms(r.get('init_ms'))} "
            f"| {_ms(r.get('first_ms'))} | {_ms(r['inference_ms'])} | {_ms(ref)} | {speedup} |"
        )
    if len(lines) == 2:  # only the baseline was timed
        for r in rows:
            lines.append(
                f"| {r['model']} | {r['threads']} | {_ms(r.get('init_ms'))} "
                f"| {_ms(r.get('first_ms'))} | {_ms(r['inference_ms'])} | - | - |"
            )
    return "\n".join(lines)
