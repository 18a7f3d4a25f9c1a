"""Print the Python distributions a system interpreter sees that pip (not dpkg) would own.

Run by .ci/run with Debian's ``/usr/bin/python3`` before and after ``tools/setup.sh``: the two
listings must be equal, which shows that the set-up installed nothing into the system interpreter
(PEP 668). Packages in ``/usr/lib/python3/dist-packages`` belong to dpkg (python3-gi, which the
set-up installs with apt) and are left out. Standard library only: it runs before anything is set up.
"""

from __future__ import annotations

import importlib.metadata
import sys
import sysconfig

DPKG_PREFIXES = ("/usr/lib/python3/", "/usr/share/")


def pip_owned() -> list[str]:
    """``name==version (location)`` for each distribution outside dpkg's directories, sorted."""
    lines = set()
    for dist in importlib.metadata.distributions():
        location = str(dist.locate_file(""))
        if not location.startswith(DPKG_PREFIXES):
            lines.add(f"{dist.metadata['Name']}=={dist.version} ({location})")
    return sorted(lines)


def main() -> None:
    """Header with the interpreter and its PEP 668 marker, then one line per distribution."""
    marker = sysconfig.get_path("stdlib") + "/EXTERNALLY-MANAGED"
    try:
        open(marker).close()
        managed = "externally managed"
    except OSError:
        managed = "not externally managed"
    print(f"# {sys.executable} {sys.version.split()[0]}: {managed}")
    for line in pip_owned():
        print(line)


if __name__ == "__main__":
    main()
