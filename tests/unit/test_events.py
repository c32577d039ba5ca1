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


def test_json_round_trip_is_valid_by_the_schema():
    ev = events.decode(raw_merge())
    back = json.loads(json.dumps(ev, allow_nan=False))
    assert back == ev and events.valid_event(back)
    assert not events.valid_event({**back, "prev_cause": ["name", 3]})
    assert not events.valid_event({**back, "pid": "10"})
    assert not events.valid_event({"type": "no_such_type", "pid": 1})


def test_schema_matches_the_header():
    """Every kernel event type in the schema has its VT_EV_ code, its struct, and every field the schema
    validates exists in the struct (or is one the decoder adds); every VT_EV_ code has a schema entry;
    every enum and flag constant exists."""
    lay = events.layout()
    c = lay.constants
    codes = {v for k, v in c.items() if k.startswith("VT_EV_")}
    seen = set()
    for t in events.SCHEMA.values():
        if t.code is None:
            continue
        seen.add(c[t.code])
        struct_fields = {f for f, _, _ in lay.fields[t.struct]} | {f for f, _, _ in lay.fields["vt_hdr"]}
        added = {"pid", "comm", "err"} | {f for f, _ in t.flags}
        for f, _ in t.fields:
            assert f in struct_fields or f in added, (t.name, f)
        for _, macro in t.flags:
            assert macro in c
        for f, words in t.enums:
            assert f in struct_fields
            assert all(m in c for m, _ in words)
            assert len({c[m] for m, _ in words}) == len(words)  # no two words for one number
    assert seen == codes


@pytest.mark.parametrize("name", sorted(events.SCHEMA))
def test_validator_rejects_each_missing_required_field(name):
    t = events.SCHEMA[name]
    sample = {"type": name}
    good = {"int": 1, "int?": 1, "u64": 5, "u64?": 5, "str": "x", "str?": "x", "str|null": None, "words": ["a"]}
    for f, kind in t.fields:
        sample[f] = good[kind]
    assert events.valid_event(sample)
    for f, kind in t.fields:
        broken = {k: v for k, v in sample.items() if k != f}
        # optional kinds may be absent; the others may not
        assert events.valid_event(broken) == (kind.endswith("?") or kind == "str|null"), (name, f)
        assert not events.valid_event({**sample, f: 1.5}), (name, f)


def test_fork_probe_words_come_from_the_header():
    lay = events.layout()
    c = lay.constants
    rec = lay.structs["vt_fork"]()
    rec.h.type = c["VT_EV_FORK"]
    rec.probe = c["VT_PROBE_DUP_MMAP_WINDOW"]
    assert events.decode(bytes(rec))["probe"] == "uprobe_dup_mmap_window"
    rec.probe = 99
    assert events.decode(bytes(rec))["probe"] == "99"
