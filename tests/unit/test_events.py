import errno
import json

import pytest

from vmatrace_bpf import events


def raw_merge(**kw):
    lay = events.layout()
    c = lay.constants
    rec = lay.structs["vt_merge"]()
    rec.h.type = c["VT_EV_MERGE"]
    rec.h.ts, rec.h.pid, rec.h.tid = 123, 10, 11
    rec.h.comm = b"py"
    rec.start, rec.end = 0x1000, 0x2000
    rec.source = c["VT_SRC_EXISTING"]
    rec.outcome = c["VT_MERGE_NONE"]
    rec.prev_cause = c["VT_CAUSE_NAME"]
    rec.next_cause = c["VT_CAUSE_NOT_ADJACENT"] | c["VT_CAUSE_FLAGS"]
    rec.name = b"b"
    rec.prev_name = b"a"
    for k, v in kw.items():
        setattr(rec, k, v)
    return bytes(rec)


def test_decode_merge():
    ev = events.decode(raw_merge())
    assert ev["type"] == "merge" and ev["source"] == "existing_range" and ev["outcome"] == "none"
    assert ev["prev_cause"] == ["name"] and ev["next_cause"] == ["not_adjacent", "flags"]
    assert (ev["name"], ev["prev_name"], ev["next_name"]) == ("b", "a", "")
    assert ev["ts"] == 123 and ev["pid"] == 10 and ev["tid"] == 11 and ev["comm"] == "py"


def test_decode_name_set_errno_and_flags():
    lay = events.layout()
    c = lay.constants
    rec = lay.structs["vt_name_set"]()
    rec.h.type = c["VT_EV_NAME_SET"]
    rec.h.flags = c["VT_F_NAME_TRUNCATED"]
    rec.ret = -errno.EINVAL
    rec.name = b"x" * 79
    ev = events.decode(bytes(rec))
    assert ev["err"] == "EINVAL" and ev["name_truncated"] and not ev["name_null"]


def test_non_utf8_name_kept_escaped():
    ev = events.decode(raw_merge(name=b"\xff\x1b[2J"))
    assert ev["name"] == "\\xff\x1b[2J"


def test_short_or_unknown_records_are_not_events():
    assert events.decode(b"") is None
    assert events.decode(raw_merge()[:50]) is None
    lay = events.layout()
    rec = lay.structs["vt_hdr"]()
    rec.type = 99
    assert events.decode(bytes(rec)) is None


def test_json_round_trip():
    ev = events.decode(raw_merge())
    assert events.from_json(events.to_json(ev)) == ev
    with pytest.raises(events.RecordError):
        events.from_json("{not json")
    with pytest.raises(events.RecordError):
        events.from_json(json.dumps([1, 2]))
