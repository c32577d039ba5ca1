"""session.prepare's start-up path: the checks and the trace share one plan, and the blocking
checks do not ask bcc about fentry (a non-blocking check that costs ~0.2 s under TCG)."""

import os

import pytest

from vmatrace_bpf import checks, session
from vmatrace_bpf import plan as plan_mod

from conftest import fixture_kernel


@pytest.fixture
def kinfo_612(monkeypatch):
    kinfo = fixture_kernel("x86_64", "6.12.117")
    monkeypatch.setattr(session.KernelInfo, "live", classmethod(lambda cls: kinfo))
    return kinfo


def counting_choose(monkeypatch, where):
    calls = []
    real = plan_mod.choose

    def choose(*a, **k):
        calls.append((a, k))
        return real(*a, **k)
    for mod in where:
        monkeypatch.setattr(mod, "choose", choose)
    return calls


def test_prepare_plans_once_and_checks_that_plan(kinfo_612, monkeypatch):
    calls = counting_choose(monkeypatch, [session, checks, plan_mod])
    seen = []
    monkeypatch.setattr(session, "blocking_problem", lambda kinfo, plan=None: seen.append(plan))
    kinfo, plan = session.prepare([os.getpid()], None, ())
    assert kinfo is kinfo_612
    assert len(calls) == 1
    assert seen == [plan] and plan.choices["merge"].ok


def test_prepare_with_force_plans_with_the_pins(kinfo_612, monkeypatch):
    calls = counting_choose(monkeypatch, [session, checks, plan_mod])
    seen = []
    monkeypatch.setattr(session, "blocking_problem", lambda kinfo, plan=None: seen.append(plan))
    kinfo, plan = session.prepare([os.getpid()], None, ("fork=uprobe_dup_mmap-window",))
    assert seen == [None]  # the checks plan for themselves: the pinned plan is not the kernel's default
    assert calls[-1][1]["force"] == {"fork": "uprobe_dup_mmap-window"}
    assert plan.choices["fork"].variant.name == "uprobe_dup_mmap-window"


def test_blocking_checks_use_the_given_plan_and_skip_fentry(kinfo_612, monkeypatch):
    plan = plan_mod.choose(kinfo_612)
    monkeypatch.setattr(checks, "choose", lambda *a, **k: pytest.fail("planned again"))
    monkeypatch.setattr(checks, "support_kfunc", lambda: pytest.fail("asked bcc about fentry"))
    rep = checks.diagnose(kinfo_612, live=False, plan=plan, fentry=False)
    assert rep.plan is plan
    assert "fentry" not in [c.name for c in rep.checks]
    monkeypatch.setattr(checks, "support_kfunc", lambda: True)
    assert "fentry" in [c.name for c in checks.diagnose(kinfo_612, live=False, plan=plan).checks]
