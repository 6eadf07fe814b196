"""A Debian 12 booted under systemd-nspawn: the cached root, an overlay per run, commands through nsenter."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

CACHE = Path(os.environ.get("EDGE_FER_CI_CACHE", "/var/cache/edge-fer-ci"))
SUITE = "bookworm"  # Debian 12, as Raspberry Pi OS; its systemd is 252
# procps: /bin/kill, which ExecReload= runs (every Debian 12 and Raspberry Pi OS has it; minbase does not).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-venv", "mosquitto")
VENV = "/opt/edge-fer"  # where README installs edge-fer
# Inside: a plain root's environment, not the host's (its PYTHONPATH, pip settings, pager).
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
       "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "HOME": "/root"}


class ToolMissing(RuntimeError):
    """A tool the container needs is not installed: a failure, since .ci/run installs it."""


def why_not() -> str | None:
    """Why no container can run on this machine at all (then the test is skipped), or None."""
    if os.geteuid() != 0:
        return "booting a container needs root (mounts, systemd-nspawn)"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (apt-get install systemd-container)"
    return None


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed (apt-get install {package})")
    return path


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _mirror() -> str:
    """The Debian mirror apt uses here: the root must come from where this machine may download."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for uri in re.findall(r"^URIs:\s*(\S+)", sources.read_text(errors="replace"), re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text(errors="replace").splitlines():
            words = line.split()
            if len(words) > 2 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder of the cache at a time (two test runs, or a test and CI)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _replace_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _prune(kind: str, keep: Path) -> None:
    """Remove the cache's older builds of one kind (made for other packages or dependencies); the lock is held."""
    for old in CACHE.glob(f"{kind}-*"):
        if old != keep and not old.name.startswith(keep.name):
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def base_root() -> Path:
    """The debootstrapped root, built once (minutes) and kept in CACHE; never written to afterwards."""
    root = CACHE / f"{SUITE}-root-{_key(SUITE, PACKAGES)}"
    done = root / ".complete"
    if done.exists():
        return root
    with _cache_lock():
        if done.exists():
            return root
        debootstrap = _need("debootstrap", "debootstrap")
        partial = root.with_name(root.name + ".partial")
        _replace_dir(partial)
        log = CACHE / "debootstrap.log"
        with open(log, "w") as out:
            res = subprocess.run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                                  str(partial), _mirror()], stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({res.returncode}); {log}:\n{log.read_text()[-2000:]}")
        shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
        partial.rename(root)
        done.touch()
        _prune(f"{SUITE}-root", root)
    return root


def _requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines, but its extras'."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    return sorted(line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("Requires-Dist:") and "extra ==" not in line)


def dependency_wheels(wheel: Path) -> Path:
    """The wheel's dependencies as wheels for the root's Python 3.11 and glibc 2.36, cached by what it requires."""
    wheels = CACHE / f"wheels-{_key(_requirements(wheel))}"
    arch = platform.machine()
    tags = [f"manylinux2014_{arch}", *(f"manylinux_2_{v}_{arch}" for v in range(17, 37))]
    args = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(wheels), "--only-binary=:all:",
            "--python-version", "3.11", "--implementation", "cp", *(x for t in tags for x in ("--platform", t)),
            str(wheel)]
    with _cache_lock():
        # Offline from the cache once it holds a solution; else from this machine's index (its pip config).
        if subprocess.run([*args, "--no-index", "--find-links", str(wheels)], capture_output=True,
                          timeout=600).returncode != 0:
            res = subprocess.run(args, capture_output=True, text=True, timeout=1200)
            if res.returncode != 0:
                raise RuntimeError(f"pip download of the dependencies failed:\n{res.stderr[-3000:]}")
        for own in wheels.glob("edge_fer-*.whl"):  # pip download copies the project's wheel too
            own.unlink()
        _prune("wheels", wheels)
    return wheels


class Overlay:
    """An overlayfs of read-only layers (the first on top) and a writable upper folder, mounted at `where`."""

    def __init__(self, layers: list[Path], work: Path) -> None:
        self.where = work / "root"
        self.upper = work / "upper"
        self._work = work / "overlay-work"
        for d in (self.where, self.upper, self._work):
            d.mkdir(parents=True)
        self.upper.chmod(0o755)  # the merged root's own mode comes from here
        lower = ":".join(str(p) for p in layers)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={self.upper},workdir={self._work}", str(self.where)],
                       check=True, capture_output=True, timeout=60)

    def unmount(self) -> None:
        """Unmount, lazily if something still holds it."""
        if subprocess.run(["umount", str(self.where)], capture_output=True, timeout=60).returncode != 0:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True, timeout=60)


def _nspawn(root: Path, *extra: str) -> list[str]:
    # --keep-unit: no scope is asked of the host's systemd (there may be no D-Bus to ask); no network at all.
    return ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--private-network", *extra]


def venv_layer(root: Path, wheels: Path) -> Path:
    """A layer over `root` with README's venv and the dependencies installed in it, cached by their wheels."""
    deps = sorted(p.name for p in wheels.glob("*.whl"))
    layer = CACHE / f"venv-{_key(root.name, deps)}"
    done = CACHE / f"{layer.name}.complete"
    if done.exists():
        return layer
    with _cache_lock():
        if done.exists():
            return layer
        work = CACHE / f"{layer.name}.partial"
        _replace_dir(work)
        overlay = Overlay([root], work)
        try:
            script = (f"python3 -m venv --system-site-packages {VENV} && {VENV}/bin/pip install -q --no-index "
                      f"--no-cache-dir --disable-pip-version-check " + " ".join(f"/wheels/{d}" for d in deps))
            res = subprocess.run(_nspawn(overlay.where, f"--bind-ro={wheels}:/wheels", "/bin/sh", "-c", script),
                                 capture_output=True, text=True, timeout=1200, env={**os.environ, **ENV})
        finally:
            overlay.unmount()
        if res.returncode != 0:
            raise RuntimeError(f"the venv could not be made in the root:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        _replace_dir(layer)
        overlay.upper.rename(layer)
        shutil.rmtree(work)
        done.touch()
        _prune("venv", layer)
    return layer


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


class Container:
    """A booted systemd in its own namespaces, on an overlay of `layers`; its writes go to `work`."""

    def __init__(self, layers: list[Path], work: Path, name: str) -> None:
        self.overlay = Overlay(layers, work)
        self.root = self.overlay.where  # the container's / as seen from here, for files put in
        self.name = name
        self.console = work / "console.log"
        self.proc: subprocess.Popen | None = None
        self.leader = 0  # the container's PID 1, as this machine numbers it

    def boot(self, timeout: float = 60) -> None:
        """Boot and wait until systemd has started everything (running, or degraded with a unit failed)."""
        with open(self.console, "w") as console:
            self.proc = subprocess.Popen(_nspawn(self.root, "-b", "--console=passive", f"--machine={self.name}"),
                                         stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                         start_new_session=True, env={**os.environ, **ENV})
        deadline = time.monotonic() + timeout
        while not self.leader:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn did not boot:\n{self.console.read_text()[-3000:]}")
            self.leader = next((p for p in _children(self.proc.pid)
                                if Path(f"/proc/{p}/comm").read_text().strip() == "systemd"), 0)
            time.sleep(0.05)
        state, why = "", ""
        while not state and time.monotonic() < deadline:  # until its systemd answers on its private socket
            res = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=timeout)
            state, why = res.stdout.strip(), res.stderr.strip()
            time.sleep(0 if state else 0.05)
        if state not in ("running", "degraded"):
            raise RuntimeError(f"the container's systemd is {state or why!r}:\n{self.console.read_text()[-3000:]}")

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A command inside, in all of the container's namespaces; its output as text."""
        res = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *argv], capture_output=True, text=True,
                             timeout=timeout, env=ENV)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
        return res

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A shell script inside."""
        return self.run("/bin/sh", "-c", script, check=check, timeout=timeout)

    def put(self, path: str, data: bytes | str, mode: int = 0o644) -> Path:
        """Write a file inside (folders made as needed, readable by all); its path as seen from here."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)
        return target

    def close(self) -> None:
        """Power the container off (SIGTERM to nspawn halts it cleanly), kill what is left, unmount."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.leader, signal.SIGKILL)  # the end of its PID namespace: everything inside
                self.proc.kill()
                self.proc.wait(10)
        self.overlay.unmount()
