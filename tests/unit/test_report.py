"""Aggregation: the numbers watch, report and the tests all use."""

from vmatrace_bpf.aggregate import Aggregator, percentile


def ev(type_, **kw):
    base = {"type": type_, "ts": 0, "pid": 7, "tid": 7, "comm": "app"}
    base.update(kw)
    return base


def merge(outcome, prev_cause=(), next_cause=(), name="b", prev_name="a", source="existing_range"):
    return ev("merge", outcome=outcome, prev_cause=list(prev_cause), next_cause=list(next_cause), name=name,
              prev_name=prev_name, next_name="", source=source)


def test_names_merges_and_cost():
    evs = [ev("name_set", ret=0, name="a", err=None), ev("name_set", ret=0, name="a", err=None),
           ev("name_set", ret=-22, name="bad$", err="EINVAL"), ev("name_set", ret=-12, name="x", err="ENOMEM"),
           ev("name_set", ret=0, name="", name_null=True, err=None),
           merge("none", ["inside"], ["unseen"]), merge("prev"), merge("none", ["name"], ["no_vma"]),
           merge("none", ["name", "flags"], ["name"], name="c", prev_name="d"), merge("both"), merge("error")]
    s = Aggregator().add_all(evs).summary()["processes"][0]
    assert s["names"] == {"set": 2, "cleared": 1, "rejected": {"EINVAL": 1, "ENOMEM": 1}, "distinct": 1}
    m = s["merges"]
    assert (m["attempted"], m["merged"], m["not_merged"], m["errors"]) == (6, 2, 3, 1)
    # name alone blocked the prev side of one attempt and the next side of another
    assert m["blocked_by_name_only"] == 2 == s["vmas_cost_by_names"]
    assert m["not_merged_causes"] == {"flags": 1, "inside": 1, "name": 3, "no_vma": 1, "unseen": 1}
    assert [(p["neighbour"], p["proposed"], p["count"]) for p in m["top_name_pairs"]] == [("a", "b", 1), ("", "c", 1)]


def test_splits_forks_objects_lost():
    evs = [ev("split", ret=0, name="mid", refcount=2), ev("split", ret=0, name="mid", refcount=3),
           ev("split", ret=-12, name="", refcount=0), ev("split", ret=0, name="", refcount=0),
           ev("fork", child_pid=8, latency_ns=300, map_count=50, vmas_copied=49, named_copied=5),
           ev("fork", child_pid=9, latency_ns=100, map_count=50, vmas_copied=49, named_copied=5),
           ev("name_alloc", ptr=1, name="a", refcount=1), ev("name_alloc", ptr=2, name="b", refcount=1),
           ev("name_free", ptr=1, name="a", refcount=0), {"type": "lost", "count": 3}, {"type": "lost", "count": 2},
           ev("exit")]
    agg = Aggregator().add_all(evs)
    summ = agg.summary()
    s = summ["processes"][0]
    assert s["splits"] == {"count": 3, "errors": 1, "max_refcount_by_name": {"mid": 3}}
    assert s["forks"]["count"] == 2 and s["forks"]["refcount_increments"] == 10
    assert s["forks"]["latency_ns"]["min"] == 100 and s["forks"]["latency_ns"]["max"] == 300
    assert s["name_objects"] == {"allocated": 2, "freed": 1, "live": 1}
    assert summ["lost_events"] == 5 and s["exited"]


def test_pid_filter_and_order():
    evs = [ev("name_set", ret=0, name="a", err=None, pid=3), ev("name_set", ret=0, name="a", err=None, pid=1)]
    agg = Aggregator().add_all(evs)
    assert [p["pid"] for p in agg.summary()["processes"]] == [1, 3]
    assert [p["pid"] for p in agg.summary([3])["processes"]] == [3]


def test_percentile_nearest_rank():
    vals = list(range(1, 101))
    assert percentile(vals, 50) == 50 and percentile(vals, 90) == 90 and percentile(vals, 100) == 100
    assert percentile([], 50) is None and percentile([7], 99) == 7
