"""Progress: live redraws on a terminal, one final line elsewhere."""

from __future__ import annotations

import io

from streamdet.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_writes_one_final_line() -> None:
    out = io.StringIO()
    bar = Progress(10, "images", out)
    for _ in range(10):
        bar.update()
    bar.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" not in text
    assert text.startswith("images [" + "#" * 30 + "] 10/10")


def test_terminal_redraws_in_place() -> None:
    out = FakeTTY()
    bar = Progress(4, "val", out)
    bar.set(4)  # the last update is always drawn
    bar.close()
    assert out.getvalue().count("\r") == 2 and "4/4" in out.getvalue()


def test_unknown_total() -> None:
    bar = Progress(None, "frames", io.StringIO())
    bar.update(3)
    assert bar.line().startswith("frames 3 ")
