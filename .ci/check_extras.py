"""Dry-run installs of edge_stad with its ``[jetson]`` and ``[gpu]`` extras for the Pythons and platforms they target.

pip evaluates environment markers against the Python that runs it, not against ``--python-version`` and
``--platform``, so this script evaluates the requirements' markers for each target itself (``packaging``) and
hands pip those that apply; pip then resolves them and their dependencies to wheels that exist for the target's
Python and platform (``--only-binary=:all:``). Dependencies' own markers are still evaluated by pip for the Python
running it. Requirements published only as source (pycuda) are checked as the target installs them: pip fetches the
sdist for the target's Python and builds its metadata. Prints what each target gets; exits 1 if one cannot install.

    python .ci/check_extras.py            # run by .ci/run; needs the package registry, no GPU
"""
import ast
import json
import os
import subprocess
import sys
import tempfile

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
except ImportError:   # a fresh virtualenv has pip's copy only
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_ONLY = {"pycuda"}   # no wheels on the registry: built on the device (JetPack has nvcc)
# extra -> (target, Python, glibc minor, platform_machine)
TARGETS = {
    "jetson": [("JetPack 5 (Xavier, Orin; Ubuntu 20.04)", "3.8.10", 31, "aarch64"),
               ("JetPack 6 (Orin; Ubuntu 22.04)", "3.10.12", 35, "aarch64")],
    "gpu": [("a desktop (Ubuntu 20.04)", "3.8.10", 31, "x86_64"), ("a desktop (Ubuntu 24.04)", "3.12.3", 39, "x86_64")],
}


def platforms(glibc, machine):
    """pip's --platform tags for a Linux with glibc 2.``glibc`` (pip does not widen a manylinux tag itself)."""
    return ([f"manylinux_2_{minor}_{machine}" for minor in range(glibc, 16, -1)]
            + [f"manylinux2014_{machine}", f"linux_{machine}"])


def requirements():
    """``install_requires`` and ``extras_require`` of setup.py, read from its source (no setuptools needed)."""
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    names = {}

    def value(node):
        if isinstance(node, ast.List):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return names[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        raise ValueError(f"setup.py line {node.lineno}: not a plain list of requirements")

    setup = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = value(node.value)
            except (ValueError, KeyError):
                pass
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") \
                == "setup":
            setup = {k.arg: k.value for k in node.value.keywords}
    extras = {ast.literal_eval(k): v for k, v in zip(setup["extras_require"].keys, setup["extras_require"].values)}
    return value(setup["install_requires"]), {name: value(extras[name]) for name in TARGETS}


def environment(python, machine):
    env = default_environment()
    env.update(python_version=".".join(python.split(".")[:2]), python_full_version=python, platform_machine=machine,
               sys_platform="linux", platform_system="Linux", os_name="posix", implementation_name="cpython",
               platform_python_implementation="CPython")
    return env


def pip(*args):
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def check(extra, target, python, glibc, machine, wanted):
    env = environment(python, machine)
    applying = [r for r in wanted if Requirement(r).marker is None or Requirement(r).marker.evaluate(env)]
    plain = [str(Requirement(r)).split(";")[0] for r in applying]
    binary = [r for r in plain if Requirement(r).name not in SOURCE_ONLY]
    source = [r for r in plain if Requirement(r).name in SOURCE_ONLY]
    short = ".".join(python.split(".")[:2])
    tags = [a for p in platforms(glibc, machine) for a in ("--platform", p)]
    with tempfile.TemporaryDirectory() as tmp:
        code, out = pip("install", "--dry-run", "--quiet", "--ignore-installed", "--only-binary=:all:",
                        "--python-version", short, *tags, "--report", os.path.join(tmp, "report.json"), *binary)
        if code != 0:
            return False, f"[{extra}] on {target}: cannot install {' '.join(binary)}:\n{out}"
        with open(os.path.join(tmp, "report.json"), encoding="utf-8") as f:
            got = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.load(f)["install"]}
        for requirement in source:
            code, out = pip("download", "--quiet", "--no-deps", "--no-binary", Requirement(requirement).name,
                            "--python-version", short, *tags, "--dest", tmp, requirement)
            if code != 0:
                return False, f"[{extra}] on {target}: no source of {requirement} for Python {short}:\n{out}"
            sdist = next(n for n in os.listdir(tmp) if n.endswith((".tar.gz", ".zip")))
            got[Requirement(requirement).name] = sdist.rsplit("-", 1)[1].split(".tar")[0] + " (source, built there)"
    named = [Requirement(r).name for r in plain]
    listed = ", ".join(f"{n} {got.get(n) or got.get(n.replace('_', '-'), '?')}" for n in named)
    return True, f"[{extra}] on {target}, Python {short} {machine}: {listed}; {len(got)} distributions in all"


def main():
    core, extras = requirements()
    failed = False
    for extra, targets in TARGETS.items():
        for target, python, glibc, machine in targets:
            ok, line = check(extra, target, python, glibc, machine, core + extras[extra])
            failed |= not ok
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
