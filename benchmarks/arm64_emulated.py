"""Stock-TFLite exports on ARM (arm64 under qemu-user emulation) against x86: same outputs?

No ARM machine is reachable here, but qemu-user runs an arm64 Python (built
from Debian's arm64 packages and aarch64 wheels), and with it TFLite's ARM kernels (NEON, ruy, XNNPACK's arm64
code). Models whose ops are all stock TFLite builtins run there; models with ``Lce*`` ops
do not (LCE's ARM kernels are not in the wheel). This script checks the exports of that
first kind:

* ``float``: ``zoo.build("binary_cnn", method="float")``, the float twin;
* ``tsq``: ``zoo.build("binary_cnn", method="tsq")`` (ternary kernels on sparse 2-bit
  codes), whose four hidden convolutions the converter exports as int8 ``CONV_2D``;
* ``dorefa``: the same network with 2-bit DoReFa activations and weights
  (``UniformQuantizer``), also exported as int8 kernels.

Each is built with seeded random weights, then ``tfquant.finalize``\\d (exact kernels,
BatchNorm re-estimated on 512 Fashion-MNIST training images, so the statistics are not
the identity), converted with ``tfquant.converters.convert_with_report`` (calibrated on 64
training images) and checked to hold no ``Lce*`` op. Every flatbuffer then runs on the
same ``--images`` test images, one at a time (the flatbuffer's batch is 1), by the same
runner (this file with ``--runner``) and the same ai-edge-litert wheel, once by the host's
Python (x86-64) and once by the emulated arm64 Python, in two configurations:

* ``default``: the interpreter as deployed (XNNPACK delegate where it applies);
* ``builtin``: TFLite's builtin kernels without delegates, every tensor preserved, so the
  int8 activations between the layers can be read: these are compared bit for bit.

Each flatbuffer runs emulated as each of ``--cpus`` (qemu CPU models; default
``cortex-a72``, Raspberry Pi 4's core, and ``neoverse-n1``, Graviton2's, Cortex-A76 class
with dot product). qemu's default model ``max`` also advertises SVE, SME and i8mm; there
XNNPACK's int8 path gives outputs far from x86's and from Keras (0.3 to 0.7 in softmax
probability), from qemu's emulation or from XNNPACK's kernels for those features (which,
cannot be told without the hardware): it is opt-in (``--cpus max``).

Pass, per model, CPU and configuration of ``--configs``: float outputs within
``--tolerance`` (max abs diff, default 1e-5); in the ``builtin`` run every int8 tensor
equal on both machines (else ``divergence_origins`` names the ops that part with equal
int8 inputs); at least one int8 ``CONV_2D`` (int8 input and weights) in each int8 model,
and no ``Lce*`` op in any. The script exits with 1 and names what differed otherwise.

Measured (ai-edge-litert 2.1.6, qemu 7.2): the float twin matches within 1.2e-7 in both
configurations; the int8 exports match within 6e-8 in the ``default`` configuration
(XNNPACK), but not bit for bit with the builtin kernels: their int8 ``CONV_2D`` rounds
requantized values just below a half step (within 1e-3) differently (x86-64 up, as double
rounding does; ARM to the nearest, as Keras; 29 of 100352 elements in ``tsq``'s second convolution), and the next layers grow
the 1-step differences (up to 17 steps, 0.004 in softmax probability). That is a finding
about TFLite's kernels, reported in the JSON; the exit status is decided by the deployed
interpreter (``--configs default``) unless ``--configs default,builtin`` asks for both.

Emulated run times say nothing about ARM speed (qemu translates every instruction): only
the script's total wall time is recorded, as its cost.

The arm64 Python is built once into ``--root`` (default ``~/.cache/tfquant/arm64``) and
reused: ``qemu-user-static`` from apt (if missing; needs root), ``dpkg --add-architecture
arm64``, the arm64 debs of ``python3.11`` and its libraries (resolved with ``apt-cache
depends --recurse``) fetched with ``apt-get download`` and unpacked with ``dpkg -x``, and
``numpy`` + ``ai-edge-litert`` wheels installed with the host's ``pip install --target
--platform manylinux_2_17_aarch64 --only-binary=:all:`` (and the same pins for x86-64).
Each phase is timed in ``setup_seconds``.

Run (about 45 s from nothing, root needed for apt; about 20 s once ``--root`` is built;
2 CPU cores)::

    .venv/bin/python benchmarks/arm64_emulated.py --out runs/arm64_emulated.json

``--models float`` checks one model; ``--setup-only`` builds the root and stops;
``--rebuild`` rebuilds it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
MODELS = ("float", "tsq", "dorefa")
INT8_MODELS = ("tsq", "dorefa")
# 2.3.0's interpreter segfaults at creation under Debian 12's qemu 7.2 (every CPU model);
# 1.4.0, 2.0.3 and 2.1.6 run.
LITERT = "ai-edge-litert==2.1.6"
NUMPY = "numpy==1.26.4"
PYTHON = "python3.11"
SMOKE_CPU = "cortex-a72"
# qemu CPU models: Raspberry Pi 4's core and Graviton2's (Cortex-A76 class, dot product).
# qemu's default "max" also advertises SVE, SME and i8mm: there XNNPACK's int8 kernels
# give other results (see the README), so it is opt-in (--cpus max).
CPUS = ("cortex-a72", "neoverse-n1")
# Extra arm64 packages the wheels' native code needs beyond Python's own dependencies.
EXTRA_DEBS = ("libstdc++6",)
# Tools that apt-cache's recursion reaches but running Python does not need.
SKIP_DEBS = frozenset({"dpkg", "tar", "install-info", "perl-base", "debconf"})
AARCH64_PLATFORMS = ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64")
X86_PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64")
NOTE = (
    "Runs under qemu-user emulation: the ARM kernels' outputs are real, their timings are "
    "not (qemu translates every instruction). No timing here is an ARM speed; "
    "total_seconds and setup_seconds are this script's cost only."
)


def log(message: str) -> None:
    print(f"[arm64] {message}", file=sys.stderr, flush=True)


def sh(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure raise with its last output lines."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        signal = f" (signal {-result.returncode})" if result.returncode < 0 else ""
        raise RuntimeError(f"Command failed ({result.returncode}{signal}): {' '.join(cmd)}\n{tail}")
    return result


# ----------------------------------------------------------------- the arm64 Python
class Arm64Python:
    """The arm64 root under ``root``: ``sysroot/`` (unpacked debs), ``site-aarch64/`` and
    ``site-x86_64/`` (wheels). Each part is built into a temporary directory and renamed
    into place, so an interrupted build leaves nothing that looks finished."""

    def __init__(self, root: pathlib.Path, litert: str = LITERT, numpy: str = NUMPY):
        self.root = root
        self.sysroot = root / "sysroot"
        self.site = {"aarch64": root / "site-aarch64", "x86_64": root / "site-x86_64"}
        self.pins = [numpy, litert]
        self.seconds: dict[str, float] = {}

    @property
    def python(self) -> pathlib.Path:
        return self.sysroot / "usr" / "bin" / PYTHON

    def _timed(self, phase: str, fn) -> None:
        start = time.perf_counter()
        fn()
        self.seconds[phase] = round(time.perf_counter() - start, 2)

    def build(self, rebuild: bool = False) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if rebuild:
            for path in (self.sysroot, *self.site.values()):
                shutil.rmtree(path, ignore_errors=True)
        self._timed("qemu", self._qemu)
        if not self.python.exists():
            self._timed("arm64_apt_index", self._arm64_index)
            self._timed("debs", self._debs)
        else:
            log(f"arm64 Python present: {self.python}")
        for arch, platforms in (("aarch64", AARCH64_PLATFORMS), ("x86_64", X86_PLATFORMS)):
            self._timed(f"wheels_{arch}", lambda a=arch, p=platforms: self._wheels(a, p))
        self._timed("smoke", self._smoke)

    def _qemu(self) -> None:
        if shutil.which("qemu-aarch64-static"):
            log("qemu-aarch64-static present")
            return
        self._need_root("install qemu-user-static")
        log("apt-get install qemu-user-static")
        sh(["apt-get", "update", "-q"])
        sh(["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-user-static"])

    def _need_root(self, what: str) -> None:
        if os.geteuid() != 0:
            raise RuntimeError(f"Need root to {what} (or run this once as root).")

    def _arm64_index(self) -> None:
        archs = sh(["dpkg", "--print-foreign-architectures"]).stdout.split()
        known = subprocess.run(
            ["apt-cache", "show", f"{PYTHON}:arm64"], capture_output=True, text=True
        )
        if "arm64" in archs and known.returncode == 0 and known.stdout.strip():
            log("arm64 apt index present")
            return
        self._need_root("add the arm64 architecture to apt")
        log("dpkg --add-architecture arm64; apt-get update")
        sh(["dpkg", "--add-architecture", "arm64"])
        sh(["apt-get", "update", "-q"])

    def packages(self) -> list[str]:
        """The arm64 packages ``python3.11`` needs: ``apt-cache depends --recurse`` over
        Depends / Pre-Depends, kept to real arm64 packages (the recursion also walks into
        the host's own packages and into virtual ones, which are dropped)."""
        out = sh(
            [
                "apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                f"{PYTHON}:arm64", *(f"{p}:arm64" for p in EXTRA_DEBS),
            ]
        ).stdout  # fmt: skip
        names = set()
        for line in out.splitlines():
            if line.startswith((" ", "<")) or not line.endswith(":arm64"):
                continue
            name = line[: -len(":arm64")]
            if name not in SKIP_DEBS:
                names.add(name)
        if PYTHON not in names:
            raise RuntimeError(f"apt-cache found no {PYTHON}:arm64. Output:\n{out[-2000:]}")
        return sorted(names)

    def _debs(self) -> None:
        names = self.packages()
        log(f"apt-get download {len(names)} arm64 packages")
        debs = self.root / "debs"
        shutil.rmtree(debs, ignore_errors=True)
        debs.mkdir()
        sh(["apt-get", "download", "-q", *(f"{n}:arm64" for n in names)], cwd=debs)
        files = sorted(debs.glob("*.deb"))
        if len(files) != len(names):
            raise RuntimeError(f"Expected {len(names)} .deb files. Received: {len(files)}")
        partial = pathlib.Path(tempfile.mkdtemp(prefix="sysroot.", dir=self.root))
        log(f"dpkg -x {len(files)} debs into {self.sysroot}")
        for deb in files:
            sh(["dpkg", "-x", str(deb), str(partial)])
        shutil.rmtree(self.sysroot, ignore_errors=True)
        partial.rename(self.sysroot)
        self.debs = {
            "count": len(files),
            "megabytes": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "packages": names,
        }
        shutil.rmtree(debs)

    def _wheels(self, arch: str, platforms: tuple[str, ...]) -> None:
        site = self.site[arch]
        stamp = site / ".pins"
        if stamp.exists() and stamp.read_text().split() == self.pins:
            log(f"{arch} wheels present: {' '.join(self.pins)}")
            return
        log(f"pip install --target ({arch}): {' '.join(self.pins)}")
        partial = pathlib.Path(tempfile.mkdtemp(prefix=f"site-{arch}.", dir=self.root))
        platform_args = [a for p in platforms for a in ("--platform", p)]
        sh(
            [
                sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "--target", str(partial), *platform_args, "--python-version", "3.11",
                "--implementation", "cp", "--only-binary=:all:", *self.pins,
            ]
        )  # fmt: skip
        (partial / ".pins").write_text("\n".join(self.pins) + "\n")
        shutil.rmtree(site, ignore_errors=True)
        partial.rename(site)

    def command(self, cpu: str | None = None) -> list[str]:
        """The host's Python (``cpu=None``), or the arm64 Python emulated as qemu's ``cpu``
        model. ``-I`` keeps each from the other's (and the user's) packages."""
        if cpu is None:
            return [sys.executable, "-I"]
        qemu = shutil.which("qemu-aarch64-static") or "qemu-aarch64-static"
        return [qemu, "-cpu", cpu, "-L", str(self.sysroot), str(self.python), "-I"]

    def _smoke(self) -> None:
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); import platform, numpy, "
            "ai_edge_litert.interpreter; print(platform.machine(), platform.python_version(), "
            "numpy.__version__)"
        )
        out = sh([*self.command(SMOKE_CPU), "-c", code, str(self.site["aarch64"])]).stdout
        machine, version, numpy_version = out.split()
        if machine != "aarch64":
            raise RuntimeError(f"Expected the emulated Python on aarch64. Received: {machine}")
        self.info = {"machine": machine, "python": version, "numpy": numpy_version}
        log(f"emulated Python runs: {out.strip()}")


# ----------------------------------------------------------------- the runner (both machines)
def runner(argv: list[str]) -> int:
    """Run flatbuffers on an ``.npy`` batch one image at a time; write ``NAME.npz`` with
    ``default`` and ``builtin`` outputs and every int8 tensor (``int8/<index>``) of the
    builtin run. Needs only numpy and ai-edge-litert (it runs in the emulated Python)."""
    site, inputs_path, out_dir, *models = argv
    sys.path.insert(0, site)
    import numpy as np
    from ai_edge_litert import interpreter as litert

    x = np.load(inputs_path)
    info = {"machine": platform.machine(), "numpy": np.__version__, "models": {}}
    try:
        from importlib.metadata import version

        info["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - the version is informative only
        info["ai_edge_litert"] = None
    for path in models:
        name = pathlib.Path(path).stem
        arrays = {}
        for config in ("default", "builtin"):
            kwargs = {"model_path": path, "num_threads": 1}
            if config == "builtin":
                kwargs["experimental_op_resolver_type"] = (
                    litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                )
                kwargs["experimental_preserve_all_tensors"] = True
            interp = litert.Interpreter(**kwargs)
            interp.allocate_tensors()
            (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
            int8 = [t["index"] for t in interp.get_tensor_details() if t["dtype"] == np.int8]
            int8 = int8 if config == "builtin" else []
            outputs, tensors = [], {i: [] for i in int8}
            for image in x:
                interp.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
                interp.invoke()
                outputs.append(interp.get_tensor(out["index"])[0].copy())
                for i in int8:
                    tensors[i].append(interp.get_tensor(i).copy())
            arrays[config] = np.stack(outputs)
            arrays.update({f"int8/{i}": np.stack(v) for i, v in tensors.items()})
        np.savez(os.path.join(out_dir, f"{name}.npz"), **arrays)
        try:  # execution order, to locate where the two machines' int8 tensors part
            ops = [
                [d["op_name"], [int(i) for i in d["inputs"]], [int(o) for o in d["outputs"]]]
                for d in interp._get_ops_details()
            ]
        except Exception:  # noqa: BLE001 - a private API; only the diagnosis needs it
            ops = None
        info["models"][name] = {"int8_tensors": len(int8), "ops": ops}
    print(json.dumps(info))
    return 0


def run_on(cpu: str | None, arm: Arm64Python, models: list[pathlib.Path], inputs, work) -> dict:
    """Run the runner on the host (``cpu=None``) or emulated as ``cpu``; outputs go to
    ``work/<cpu or x86_64>/``."""
    where = cpu or "x86_64"
    out_dir = work / where
    out_dir.mkdir()
    site = arm.site["x86_64" if cpu is None else "aarch64"]
    cmd = [*arm.command(cpu), str(pathlib.Path(__file__).resolve()), "--runner"]
    cmd += [str(site), str(inputs), str(out_dir), *map(str, models)]
    log(f"running {len(models)} model(s) on {where}" + (" (qemu)" if cpu else ""))
    start = time.perf_counter()
    info = json.loads(sh(cmd).stdout.strip().splitlines()[-1])
    info["wall_seconds_cost_only"] = round(time.perf_counter() - start, 2)
    return info


# ----------------------------------------------------------------- models and comparison
def build_model(name: str, seed: int):
    import keras

    from tfquant import quantizers, zoo

    keras.utils.set_random_seed(seed)
    if name == "dorefa":
        return zoo.binary_cnn(
            input_shape=(28, 28, 1),
            classes=10,
            input_quantizer=quantizers.UniformQuantizer(2, mode="activation"),
            kernel_quantizer=quantizers.UniformQuantizer(2, mode="weight"),
        )
    return zoo.build("binary_cnn", method=name, input_shape=(28, 28, 1), classes=10)


def load_images(count: int, seed: int):
    """``count`` Fashion-MNIST test images and 576 training images (BatchNorm statistics
    and calibration); seeded uniform noise if the dataset is not installed."""
    import numpy as np

    from tfquant import datasets

    try:
        (xtr, _), (xte, _) = datasets.load("fashion_mnist")
        return xtr[:576], xte[:count], "fashion_mnist"
    except datasets.DatasetNotFoundError:
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 1, (576 + count, 28, 28, 1)).astype(np.float32)
        return x[:576], x[576:], f"uniform noise (seed {seed}): fashion_mnist not installed"


def convert(name: str, seed: int, train, work: pathlib.Path) -> tuple[pathlib.Path, dict]:
    import tfquant
    from tfquant import converters

    model = build_model(name, seed)
    tfquant.finalize(model, train[:512], batch_size=128)
    flatbuffer, report = converters.convert_with_report(
        model, calibration_data=train[512:576], verify=False
    )
    path = work / f"{name}.tflite"
    path.write_bytes(flatbuffer)
    compute = converters.flatbuffer.compute_ops(flatbuffer)
    int8_convs = sum(
        c["op"] == "CONV_2D" and c["input_type"] == "INT8" and c["weight_type"] == "INT8"
        for c in compute
    )
    ops = converters.flatbuffer.op_counts(flatbuffer)
    layers = {r["name"]: r["became"] for r in report.as_dict()["layers"]}
    return path, {
        "model": model,
        "ops": ops,
        "lce_ops": sorted(set(ops) & set(converters.flatbuffer.LCE_OPS)),
        "unsupported_ops": converters.flatbuffer.unsupported_ops(flatbuffer),
        "int8_conv2d": int8_convs,
        "compute_ops": [
            f"{c['op']} {c['input_type'].lower()}x{c['weight_type'].lower()} {c['weight_shape']}"
            for c in compute
        ],
        "layers_became": layers,
        "bytes": len(flatbuffer),
    }


def origins(ops, x86, arm) -> list[dict]:
    """The ops whose int8 inputs are equal on both machines but whose int8 output is not:
    where the machines' kernels themselves part (later differences follow from these)."""
    import numpy as np

    if not ops:
        return []
    found = []
    for index, (op, inputs, outputs) in enumerate(ops):
        keys_in = [f"int8/{i}" for i in inputs if f"int8/{i}" in x86.files]
        if any(not np.array_equal(x86[k], arm[k]) for k in keys_in):
            continue
        for o in outputs:
            key = f"int8/{o}"
            if key in x86.files and not np.array_equal(x86[key], arm[key]):
                d = x86[key].astype(int) - arm[key]
                signs = sorted({int(v) for v in np.unique(np.sign(d[d != 0]))})
                found.append(
                    {
                        "op_index": index,
                        "op": op,
                        "tensor": o,
                        "elements": int(d.size),
                        "elements_differing": int(np.count_nonzero(d)),
                        "max_steps": int(np.max(np.abs(d))),
                        "x86_minus_arm": "+" if signs == [1] else "-" if signs == [-1] else "+-",
                    }
                )
    return found


def check_export(name: str, conv: dict) -> dict:
    """The flatbuffer's ops: no ``Lce*`` or other custom op; int8 ``CONV_2D`` where due."""
    failures = []
    if conv["lce_ops"] or conv["unsupported_ops"]:
        failures.append(f"custom ops {conv['lce_ops'] or conv['unsupported_ops']}")
    result: dict = {"ops": conv["ops"], "compute_ops": conv["compute_ops"]}
    result["lce_ops"] = conv["lce_ops"]
    if name in INT8_MODELS:
        result["int8_conv2d"] = conv["int8_conv2d"]
        result["layers_became"] = conv["layers_became"]
        if conv["int8_conv2d"] == 0:
            failures.append("no int8 CONV_2D: the int8 export did not happen")
    result["pass"] = not failures
    result["failures"] = failures
    return result


def compare(name: str, x86, arm, keras_out, tolerance: float, ops) -> dict:
    """One model on x86 against one emulated ARM CPU, in both interpreter configurations."""
    import numpy as np

    result: dict = {}
    for config in ("default", "builtin"):
        a, b = x86[config], arm[config]
        diff = float(np.max(np.abs(a.astype(np.float64) - b)))
        check: dict = {"max_abs_diff": diff, "equal": bool(np.array_equal(a, b))}
        failures = [] if diff <= tolerance else [f"outputs differ by {diff:.3g} > {tolerance:g}"]
        if config == "builtin":
            keys = sorted(k for k in x86.files if k.startswith("int8/"))
            if sorted(k for k in arm.files if k.startswith("int8/")) != keys:
                failures.append("the two machines hold different int8 tensors")
                keys = []
            differ = [k for k in keys if not np.array_equal(x86[k], arm[k])]
            check["int8_tensors_compared"] = len(keys)
            check["int8_tensors_differing"] = len(differ)
            check["int8_tensors_equal"] = not differ
            if name in INT8_MODELS and not keys:
                failures.append("no int8 tensor to compare")
            if differ:
                worst = max(int(np.max(np.abs(x86[k].astype(int) - arm[k]))) for k in differ)
                failures.append(
                    f"{len(differ)} of {len(keys)} int8 tensors differ (up to {worst} steps)"
                )
                check["divergence_origins"] = origins(ops, x86, arm)
                for o in check["divergence_origins"]:
                    failures.append(
                        f"op {o['op_index']} {o['op']}: same int8 inputs on both machines, "
                        f"output tensor {o['tensor']} differs in {o['elements_differing']} of "
                        f"{o['elements']} elements by up to {o['max_steps']} step(s) "
                        f"(x86 - arm: {o['x86_minus_arm']})"
                    )
        # Informative, not a criterion: which machine a difference moves away from Keras.
        for arch, out in (("x86", x86), ("arm", arm)):
            check[f"keras_vs_{arch}_max_abs_diff"] = float(np.max(np.abs(keras_out - out[config])))
        check["pass"] = not failures
        check["failures"] = failures
        result[config] = check
    return result


# ----------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--root",
        default=os.path.join(os.path.expanduser("~"), ".cache", "tfquant", "arm64"),
        help="where the arm64 Python is built and kept",
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"some of {MODELS}")
    p.add_argument("--images", type=int, default=8, help="test images run on both machines")
    p.add_argument("--tolerance", type=float, default=1e-5, help="max abs diff of float outputs")
    p.add_argument("--seed", type=int, default=0, help="weights (and noise inputs) seed")
    p.add_argument(
        "--cpus", default=",".join(CPUS), help="qemu CPU models to emulate (qemu -cpu help)"
    )
    p.add_argument(
        "--configs",
        default="default",
        help="interpreter configurations whose comparisons decide the exit status (both are "
        "always run and reported; default: default, the interpreter as deployed)",
    )
    p.add_argument("--litert", default=LITERT, help="the ai-edge-litert requirement")
    p.add_argument("--rebuild", action="store_true", help="rebuild the root")
    p.add_argument("--setup-only", action="store_true", help="build the root and stop")
    p.add_argument("--keep", default=None, help="keep the flatbuffers and outputs here")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or sorted(set(models) - set(MODELS)) or len(set(models)) != len(models):
        p.error(f"Expected --models distinct names among {MODELS}. Received: {args.models!r}")
    args.models = [m for m in MODELS if m in models]
    if args.images < 1:
        p.error(f"Expected --images >= 1. Received: {args.images}")
    if not args.tolerance >= 0:
        p.error(f"Expected --tolerance >= 0. Received: {args.tolerance}")
    args.cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    if not args.cpus or len(set(args.cpus)) != len(args.cpus):
        p.error(f"Expected distinct --cpus. Received: {args.cpus}")
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or set(configs) - {"default", "builtin"}:
        p.error(f"Expected --configs among default, builtin. Received: {args.configs!r}")
    args.configs = configs
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if platform.machine() != "x86_64" or sys.platform != "linux":
        log(f"Expected an x86-64 Linux host. Received: {sys.platform} {platform.machine()}")
        return 2
    arm = Arm64Python(pathlib.Path(args.root).expanduser().resolve(), litert=args.litert)
    try:
        arm.build(rebuild=args.rebuild)
    except RuntimeError as e:
        log(f"FAILED to build the arm64 Python: {e}")
        return 2
    result: dict = {
        "benchmark": "arm64_emulated",
        "note": NOTE,
        "root": str(arm.root),
        "setup_seconds": arm.seconds,
        "emulated_python": arm.info,
        "pins": arm.pins,
    }
    if getattr(arm, "debs", None):
        result["debs"] = arm.debs
    if args.setup_only:
        result["total_seconds"] = round(time.perf_counter() - start, 2)
        sys.path.insert(0, str(HERE))
        import common

        common.dump(result, args.out)
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(HERE))
    import common
    import numpy as np

    result["machine"] = common.machine()
    work = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="arm64_emulated."))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        train, images, source = load_images(args.images, args.seed)
        result["inputs"] = {"images": len(images), "source": source}
        inputs = work / "inputs.npy"
        np.save(inputs, images)
        paths, conversions = [], {}
        for name in args.models:
            log(f"converting {name}")
            path, conversions[name] = convert(name, args.seed, train, work)
            paths.append(path)
        result["convert_seconds"] = round(time.perf_counter() - t, 2)
        runs = {"x86_64": run_on(None, arm, paths, inputs, work)}
        for cpu in args.cpus:
            runs[cpu] = run_on(cpu, arm, paths, inputs, work)
        result["runs"] = {
            where: {k: v for k, v in info.items() if k != "models"} for where, info in runs.items()
        }
        result["models"] = {}
        for name in args.models:
            conv = conversions[name]
            model = result["models"][name] = check_export(name, conv)
            keras_out = conv["model"].predict(images, batch_size=64, verbose=0)
            ops = runs["x86_64"]["models"][name]["ops"]
            model["arm"] = {}
            with np.load(work / "x86_64" / f"{name}.npz") as x86:
                for cpu in args.cpus:
                    with np.load(work / cpu / f"{name}.npz") as a64:
                        model["arm"][cpu] = compare(name, x86, a64, keras_out, args.tolerance, ops)
            checks = [model["arm"][c][k] for c in args.cpus for k in args.configs]
            model["max_abs_diff"] = max(c["max_abs_diff"] for c in checks)
            model["equal"] = all(c["equal"] for c in checks)
            model["pass"] = model["pass"] and all(c["pass"] for c in checks)
    except RuntimeError as e:
        log(f"FAILED: {e}")
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["tolerance"] = args.tolerance
    result["configs_checked"] = args.configs
    result["pass"] = all(m["pass"] for m in result["models"].values())
    result["total_seconds"] = round(time.perf_counter() - start, 2)
    common.dump(result, args.out)
    if not result["pass"]:
        for name, m in result["models"].items():
            for failure in m["failures"]:
                log(f"FAIL {name}: {failure}")
            for cpu, by_config in m["arm"].items():
                for config in args.configs:
                    for failure in by_config[config]["failures"]:
                        log(f"FAIL {name} on {cpu}, {config} interpreter: {failure}")
        return 1
    log("PASS: every model gives the same outputs on arm64 (emulated) as on x86-64")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--runner":
        sys.exit(runner(sys.argv[2:]))
    sys.exit(main())
