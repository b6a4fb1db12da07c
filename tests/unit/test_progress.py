"""The bring-up progress bar: silent off a terminal and for short bring-ups, a bar on a terminal after the delay."""

from __future__ import annotations

import io

from picloud.progress import BringUpProgress, render


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render_fills_the_bar_in_proportion_and_names_the_stage():
    assert render("veth pairs", 5, 10, 4.25, width=10) == "[#####.....] veth pairs 5/10  4.2s"
    assert render("OVS bridges and ports", 0, 0, 3.0, width=4) == "[....] OVS bridges and ports  3.0s"
    assert render("x", 12, 10, 1.0, width=4).startswith("[####]")


def test_no_bar_when_the_stream_is_not_a_terminal():
    out = io.StringIO()
    bar = BringUpProgress(out, delay=0.0, interval=0.01)
    bar("namespaces", 1, 2)
    bar.draw()
    bar.close()
    assert not bar.enabled and out.getvalue() == ""


def test_a_terminal_sees_nothing_before_the_delay_and_the_bar_after_it():
    out = _Tty()
    bar = BringUpProgress(out, delay=3600.0, interval=0.01)
    bar("namespaces", 1, 2)
    bar.draw()
    assert out.getvalue() == ""
    bar.delay = 0.0
    bar("switches connected", 3, 4)
    bar.draw()
    bar.close()
    text = out.getvalue()
    assert "switches connected 3/4" in text and text.endswith("\r\033[K")  # the line is erased at the end
