"""systemd/streamdet.service: `systemd-analyze verify` accepts it, and its directives agree with the code.

verify runs offline (no systemd as PID 1 needed). The unit's ExecStart binaries live in
/opt/streamdet/venv, which CI lacks, so a copy points them at an executable that exists; the
commented LoadCredential= example is switched on in that copy so that it is verified too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamdet.config import SupervisorConfig

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "streamdet.service"
INSTALLED_BIN = "/opt/streamdet/venv/bin/streamdet"
_SECONDS = {"": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "msec": 1e-3, "m": 60.0, "min": 60.0}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Unit file -> {section: {key: [values]}}; a repeated key accumulates like systemd's lists."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep:
            raise ValueError(f"not a unit file line: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(value: str) -> float:
    """A systemd time span such as ``20``, ``30s`` or ``5min`` in seconds."""
    total = 0.0
    parts = value.split()
    for part in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", part)
        if not m or m.group(2) not in _SECONDS:
            raise ValueError(f"unsupported time span {value!r}")
        total += float(m.group(1)) * _SECONDS[m.group(2)]
    if not parts:
        raise ValueError("empty time span")
    return total


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= missing"
    assert len(values) == 1, f"[{section}] {key}= given {len(values)} times"
    return values[0]


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def _verifiable_copy(dest_dir: Path, extra: str = "") -> Path:
    """The unit with existing binaries, the LoadCredential example enabled and ``extra`` appended."""
    installed = Path(sys.executable).parent / "streamdet"  # the venv's entry point (tools/setup.sh)
    binary = str(installed) if installed.is_file() else shutil.which("streamdet") or "/bin/true"
    text = UNIT.read_text().replace(INSTALLED_BIN, binary)
    text = re.sub(r"^#(LoadCredential=)", r"\1", text, flags=re.MULTILINE)
    path = dest_dir / UNIT.name  # the name must stay: verify reports by unit name
    path.write_text(text + extra)
    return path


def _verify(path: Path) -> tuple[int, str, list[str]]:
    """Run verify; returns (exit status, whole output, the output lines about our unit)."""
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    ours = [line for line in output.splitlines() if UNIT.name in line or str(path) in line]
    return proc.returncode, output, ours


needs_verify = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                  reason="systemd-analyze not installed (tools/setup.sh --test installs it)")


@needs_verify
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    rc, output, ours = _verify(_verifiable_copy(tmp_path))
    assert rc == 0, output
    assert ours == [], output


@needs_verify
def test_verify_check_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The filter above sees verify's complaints: an unknown key and a missing binary both show."""
    rc, output, ours = _verify(_verifiable_copy(tmp_path, extra="\n[Service]\nWatchdogSeconds=30\n"))
    assert any("WatchdogSeconds" in line for line in ours), output
    (tmp_path / "missing").mkdir()
    path = tmp_path / "missing" / UNIT.name
    path.write_text(UNIT.read_text().replace(INSTALLED_BIN, str(tmp_path / "no-such-binary")))
    rc, output, ours = _verify(path)
    assert rc != 0 and ours, output


def test_notify_watchdog_and_reload(unit: dict[str, dict[str, list[str]]]) -> None:
    assert _one(unit, "Service", "Type") == "notify"
    assert _one(unit, "Service", "NotifyAccess") == "main"
    assert seconds(_one(unit, "Service", "WatchdogSec")) > 0
    reload = _one(unit, "Service", "ExecReload")
    assert "-HUP" in reload.split() and "$MAINPID" in reload.split()
    assert " check " in _one(unit, "Service", "ExecStartPre")


def test_restart_policy_matches_exit_codes(unit: dict[str, dict[str, list[str]]]) -> None:
    """Exit 2 (bad configuration, a child that can never start) must not restart; exit 1 must."""
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert "2" in _one(unit, "Service", "RestartPreventExitStatus").split()
    assert "1" not in _one(unit, "Service", "RestartPreventExitStatus").split()
    assert int(_one(unit, "Unit", "StartLimitBurst")) >= 1
    assert seconds(_one(unit, "Unit", "StartLimitIntervalSec")) > 0


def test_stop_timeout_leaves_room_for_the_supervisor(unit: dict[str, dict[str, list[str]]]) -> None:
    """systemd must not SIGKILL before the supervisor's own stop grace period has run out."""
    grace = SupervisorConfig.model_fields["stop_timeout_s"].default
    assert _one(unit, "Service", "KillMode") == "mixed"
    assert seconds(_one(unit, "Service", "TimeoutStopSec")) > grace


def test_directories_match_where_the_daemon_writes(unit: dict[str, dict[str, list[str]]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX export cache lands in CacheDirectory=; %C is /var/cache for a system unit."""
    from streamdet.pipeline.backends.onnx_export import default_cache_dir

    service = unit["Service"]
    assert _one(unit, "Service", "CacheDirectory") == "streamdet"
    assert "XDG_CACHE_HOME=%C" in service["Environment"]
    monkeypatch.setenv("XDG_CACHE_HOME", "/var/cache")
    assert default_cache_dir().is_relative_to(Path("/var/cache") / _one(unit, "Service", "CacheDirectory"))
    assert _one(unit, "Service", "RuntimeDirectory") == "streamdet"
    assert _one(unit, "Service", "ProtectSystem") == "strict"


def test_gpus_stay_reachable(unit: dict[str, dict[str, list[str]]]) -> None:
    """No PrivateDevices= (it hides /dev/nvidia*); a closed device policy that lists the GPUs."""
    service = unit["Service"]
    assert "PrivateDevices" not in service
    assert _one(unit, "Service", "DevicePolicy") == "closed"
    allowed = [v.split()[0] for v in service["DeviceAllow"]]
    assert "char-nvidia*" in allowed and "char-drm" in allowed


def test_parse_helpers() -> None:
    assert parse_unit("[A]\nK=1\n# c\nK=2\n") == {"A": {"K": ["1", "2"]}}
    assert seconds("20") == 20 and seconds("5min 3s") == 303
    with pytest.raises(ValueError, match="time span"):
        seconds("20 parsecs")
