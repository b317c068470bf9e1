"""The fault suite: every cell of `gasguard bench fault-matrix` on real parts
— firmware in the MicroPython VM, the gateway process, mosquitto — must show the valve closed
within its budget and every event the board logged delivered to the regulator."""

from __future__ import annotations

import pytest

from gasguard.tools.bench import fault_matrix


@pytest.mark.parametrize("cell", list(fault_matrix.CELLS))
def test_fault_cell(cell):
    row = fault_matrix.run_cell(cell)
    print(fault_matrix._row(row))
    assert row["valve"] == "closed", row
    assert row["time_to_safe_ms"] <= row["budget_ms"], row
    assert row["events_logged"] >= 5, row  # boot, reset, and the fault's own events at least
    assert row["lost"] == 0, row
    assert row["ok"], row
