"""The bench replays the deployed rules (issue 15, fault 2: it modelled a 5-minute
keep-alive as activity while the deployment kept models loaded for idleMinutes, so
its figures described a system that was not deployed). Simulated minutes only: no
timing is asserted."""

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("scaler_sim", Path(ROOT) / "bench" / "scaler_sim.py")
sim = sys.modules.setdefault("scaler_sim", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(sim)

DAY_START = 9 * 60 + 0.25  # 09:00:15 on the first day


@pytest.mark.parametrize("idle_minutes", [5, 10, 15])
def test_a_session_is_followed_by_idle_minutes_of_billing_not_keep_alive_more(idle_minutes):
    session = [DAY_START + 3 * k for k in range(10)]  # a request every 3 minutes for half an hour
    result = sim.simulate(session, idle_minutes, "test")
    assert result.starts == 1 and result.cut == 0
    assert dict(result.reasons) == {"idle": 1}
    assert len(result.effective) == 1
    assert idle_minutes <= result.effective[0] <= idle_minutes + 2
    work_end = int(session[-1]) + 1
    assert result.billed == pytest.approx(work_end + result.effective[0] - (DAY_START + sim.PENDING))


def test_a_slow_start_is_never_cut_at_the_shortest_idle():
    result = sim.simulate([DAY_START], 1, "test")
    assert result.cut == 0 and dict(result.reasons) == {"idle": 1}
    assert result.start_wait >= sim.PENDING + sim.BOOT[0] + sim.MODEL_LOAD


def test_a_request_after_the_stop_is_a_second_cold_start():
    result = sim.simulate([DAY_START, DAY_START + 40], 10, "test")
    assert result.starts == 2 and result.delayed == 2
