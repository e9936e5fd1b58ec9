"""Progress readout: loss and examples/s stay on the bar between readings, are averaged over a
window, leave out the first (compiling) rate, and become plain lines when stderr is a file."""

import io
import sys

from ptjax.training import reporting
from ptjax.training.reporting import Readout, Reporter


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_readout_averages_a_window_and_drops_the_compiling_rate():
    readout = Readout(window=2)
    readout.add(loss=4.0, ex_s=5.0)  # the first reading's time includes the compile
    assert readout.values() == {"loss": "4"}
    readout.add(loss=2.0, ex_s=20.0)
    readout.add(loss=1.0, ex_s=30.0)
    assert readout.values() == {"loss": "1.5", "ex/s": "25"}


def test_bar_keeps_loss_and_rate_between_readings(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    reporter = Reporter(tmp_path, enabled=True, tensorboard=False, progress=True)
    reporter.start_progress(total=30, initial=0)
    for step in range(1, 31):
        reporter.progress(1)
        if step % 10 == 0:
            reporter.progress(0, loss=1.0 / step, ex_s=100.0 + step)
    assert reporter._bar.postfix == "loss=0.06111, ex/s=125"  # rate: readings 2 and 3 (115, 130 ex/s)
    reporter.progress(1)  # a step without a reading leaves the readout as it was
    assert reporter._bar.postfix == "loss=0.06111, ex/s=125"
    reporter.close()
    assert "\r" in terminal.getvalue()


def test_progress_is_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(reporting, "PROGRESS_LINE_EVERY_S", 0.0)  # a line at every step
    reporter = Reporter(tmp_path, enabled=True, tensorboard=False, progress=True)
    reporter.start_progress(total=3, initial=0)
    reporter.progress(1)
    reporter.progress(0, loss=0.5, ex_s=10.0)
    reporter.progress(1)
    reporter.progress(0, loss=0.25, ex_s=30.0)
    reporter.progress(1)
    reporter.close()
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == [
        "step 1/3", "step 2/3: loss 0.5", "step 3/3: loss 0.375, ex/s 30"]
