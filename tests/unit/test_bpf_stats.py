"""`bench`'s bpf_stats profile against a real capture: `bpftool prog show --json` and Tracer.programs()
taken together in a 6.12 guest with the full plan loaded (tests/data/bpftool/capture.py made the file)."""

import copy
import json
import os

from vmatrace_bpf import forkbench, loader
from vmatrace_bpf.forkbench import BpfStats
from vmatrace_bpf.render import bench_text

CAPTURE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "bpftool",
                       "6.12.117.json")


def capture():
    with open(CAPTURE) as f:
        return json.load(f)


def plan_programs(cap):
    """The BPF program of every probe of the captured plan (all compiled in: the full plan), each once (the
    plan's kr_vmg_new and kr_vmg_existing run one program, kr_vmg)."""
    return list(dict.fromkeys(loader.program_name(kind, target, prog)
                              for kind, target, _fn, prog in cap["plan_probes"]))


class FakeTracer:
    """What BpfStats.read asks of a Tracer, from the capture."""

    def __init__(self, programs, expected):
        self._programs, self._expected = programs, expected

    def programs(self):
        return self._programs

    def expected_programs(self):
        return self._expected


def test_capture_is_one_program_per_probe():
    cap = capture()
    names = plan_programs(cap)
    assert len(cap["plan_probes"]) == 15 and len(names) == 14
    assert [fn for _k, _t, fn, prog in cap["plan_probes"] if prog == "kr_vmg"] == ["kr_vmg_new", "kr_vmg_existing"]
    assert set(cap["tracer_programs"]) == set(names)
    # kinds the old profile missed are in it: fentry (the plan's vm_area_dup since session 23) and tracepoints
    assert {"kfunc__vmlinux__vm_area_dup", "tracepoint__kmem__kfree", "tracepoint__sched__sched_process_fork"} \
        <= set(names)


def test_every_program_matched_by_id(monkeypatch):
    cap = capture()
    names = plan_programs(cap)
    by_id = {p["id"]: p for p in cap["bpftool_prog_show"]}
    monkeypatch.setattr(BpfStats, "bpftool_progs", staticmethod(lambda: copy.deepcopy(cap["bpftool_prog_show"])))
    prof = BpfStats.read({"full": FakeTracer(cap["tracer_programs"], names)})
    assert set(prof) == {f"{fn} [full]" for fn in names}
    renamed = 0
    for fn in names:
        st = prof[f"{fn} [full]"]
        want = by_id[cap["tracer_programs"][fn]["prog_id"]]
        assert st["source"] == "bpftool" and st["id"] == want["id"]
        assert (st["run_cnt"], st["run_time_ns"]) == (want.get("run_cnt", 0), want.get("run_time_ns", 0))
        assert st["avg_ns"] == (want["run_time_ns"] / want["run_cnt"] if want.get("run_cnt") else None)
        renamed += st["name"] != fn
    # bpftool's names are not bcc's for the fexit and one tracepoint: matching by name would have lost them
    assert prof["kfunc__vmlinux__vm_area_dup [full]"]["name"] == "vm_area_dup" and renamed >= 2


def test_same_name_other_id_is_not_taken():
    cap = capture()
    progs = [p for p in cap["bpftool_prog_show"] if p["name"] != "kp_split"]
    progs.append({"id": 999, "name": "kp_split", "type": "kprobe", "run_cnt": 5, "run_time_ns": 5})  # someone else's
    prof = BpfStats.match(progs, cap["tracer_programs"], plan_programs(cap))
    info = cap["tracer_programs"]["kp_split"]
    assert prof["kp_split"] == {"id": info["prog_id"], "name": None, "run_cnt": info["run_cnt"],
                                "run_time_ns": info["run_time_ns"], "avg_ns": info["run_time_ns"] / info["run_cnt"],
                                "source": "fdinfo"}


def test_missing_program_is_reported_not_dropped(monkeypatch):
    cap = capture()
    names = plan_programs(cap)
    loaded = {fn: info for fn, info in cap["tracer_programs"].items() if fn not in ("kp_split", "tracepoint__kmem__kfree")}
    monkeypatch.setattr(BpfStats, "bpftool_progs", staticmethod(lambda: cap["bpftool_prog_show"]))
    prof = BpfStats.read({"full": FakeTracer(loaded, names)})
    assert set(prof) == {f"{fn} [full]" for fn in names}
    for fn in ("kp_split", "tracepoint__kmem__kfree"):
        assert prof[f"{fn} [full]"] == {"id": None, "name": None, "run_cnt": None, "run_time_ns": None,
                                        "avg_ns": None, "source": "missing"}
    assert sum(st["source"] == "bpftool" for st in prof.values()) == len(names) - 2
    # and the bench table says so
    s = forkbench.stats_ms([1000] * 3)
    res = {"vmas": 1, "name_len": 1, "pages": 0, "forks": 3, "distinct_names": True,
           "map_count": {"unnamed": 1, "named": 1},
           "modes": {"full": {"unnamed": s, "named": s, "regression_pct": 0.0}}, "bpf_profile": prof}
    row = next(ln for ln in bench_text(res).splitlines() if ln.startswith("kp_split [full]"))
    assert "not loaded" in row


def test_two_tracers_are_labelled_by_mode(monkeypatch):
    cap = capture()
    monkeypatch.setattr(BpfStats, "bpftool_progs", staticmethod(lambda: None))  # no bpftool: fdinfo only
    lat = {fn: cap["tracer_programs"][fn] for fn in ("kp_dup_mmap_start", "kp_dup_mmap_end")}
    prof = BpfStats.read({"latency": FakeTracer(lat, list(lat)),
                          "full": FakeTracer(cap["tracer_programs"], plan_programs(cap))})
    assert set(prof) == {f"{fn} [latency]" for fn in lat} | {f"{fn} [full]" for fn in plan_programs(cap)}
    assert {st["source"] for st in prof.values()} == {"fdinfo"}


class FakeFunc:
    def __init__(self, fd):
        self.fd = fd


class FakeBPF:
    def __init__(self, funcs):
        self.funcs = funcs


def test_tracer_programs_keys_are_bcc_function_names(monkeypatch):
    """Tracer.programs(): bcc's function names (bytes) as str, only what fdinfo shows is a program."""
    cap = capture()
    infos = {10: cap["tracer_programs"]["kp_split"], 11: cap["tracer_programs"]["kfunc__vmlinux__vm_area_dup"],
             12: {"pos": 0, "flags": 2}}  # an fd that is not a BPF program: no prog_id
    monkeypatch.setattr(loader, "fdinfo", lambda fd: infos[fd])
    t = loader.Tracer.__new__(loader.Tracer)
    t.bpf = FakeBPF({b"kp_split": FakeFunc(10), b"kfunc__vmlinux__vm_area_dup": FakeFunc(11),
                     b"helper": FakeFunc(12)})
    assert t.programs() == {"kp_split": infos[10], "kfunc__vmlinux__vm_area_dup": infos[11]}


def test_tracer_expects_every_program_it_attaches():
    """expected_programs(): the plan's kprobes/kretprobes plus what bcc loaded with the object
    (tracepoints, fexit) = every program of the captured full plan."""
    from types import SimpleNamespace
    cap = capture()
    probes = [SimpleNamespace(kind=k, target=tg, fn=fn, program=prog) for k, tg, fn, prog in cap["plan_probes"]]
    t = loader.Tracer.__new__(loader.Tracer)
    t.plan = SimpleNamespace(probes=lambda: probes)
    t._auto = [(p.kind, p.target, loader.program_name(p.kind, p.target, p.program)) for p in probes
               if p.kind in ("tracepoint", "kfunc", "kretfunc")]
    assert sorted(t.expected_programs()) == sorted(cap["tracer_programs"])
