import io
from contextlib import redirect_stdout

import pytest

from vmatrace_bpf.render import escape, event_line, print_log2_hist_text, summary_table
from vmatrace_bpf.aggregate import Aggregator


def test_escape_control_bytes():
    assert escape("a\x1b[2J\x07b") == "a\\x1b[2J\\x07b"
    assert escape("ok name-1") == "ok name-1"
    assert escape("\\") == "\\\\" and escape("\u00e9") == "\\xe9" and escape("\u2603") == "\\u2603"


MERGE = {"type": "merge", "ts": 5_000_000_000, "pid": 123456, "tid": 123456, "comm": "a-very-long-command-name",
         "start": 0x7F0000000000, "end": 0x7F0000001000, "source": "existing_range", "outcome": "none",
         "prev_cause": ["name"], "next_cause": ["not_adjacent", "flags", "pgoff"], "name": "n" * 79,
         "prev_name": "p" * 79, "next_name": "", "prev_start": 0, "prev_end": 0, "next_start": 0, "next_end": 0,
         "res_start": 0, "res_end": 0, "vm_flags": 0x100073}


def test_event_lines_fit_80_columns_unless_verbose():
    line = event_line(MERGE, ts0=0, timestamps=True)
    assert len(line) <= 79 and line.startswith("5.000")
    assert "\x1b" not in event_line({**MERGE, "name": "\x1b[31m"})
    wide = event_line(MERGE, verbose=True)
    assert "p" * 79 in wide and "src=existing_range" in wide


def test_summary_table_has_every_process():
    agg = Aggregator().add_all([{**MERGE, "pid": 1}, {**MERGE, "pid": 2, "comm": "x\x1by"}])
    text = summary_table(agg.summary())
    assert "\x1b" not in text and "x\\x1by" in text
    assert "merges blocked by the name alone: 1" in text and "lost events: 0" in text


def test_log2_hist_matches_bcc():
    from vmatrace_bpf.loader import BccMissing, import_bcc
    try:
        import_bcc()  # finds the distribution's bcc from a virtualenv too
    except (BccMissing, OSError) as e:
        pytest.skip(f"bcc (python3-bpfcc) not installed, nothing to compare with: {e}")
    import bcc.table as table
    vals = [0] * 65
    vals[1], vals[3], vals[10] = 5, 100, 1
    buf = io.StringIO()
    with redirect_stdout(buf):
        table._print_log2_hist(vals, "usecs", False)
    assert print_log2_hist_text(vals, "usecs") == buf.getvalue().rstrip("\n")
