"""A hanging async test says, before its time limit ends it, which task waits and where."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.slow  # waits out a real time limit in a pytest subprocess
def test_a_hanging_task_is_named_with_its_stack_before_the_time_limit(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "hang_report.py").read_text())
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    pytester.makepyfile(
        test_stuck="""
        import asyncio
        import pytest

        async def wait_for_a_lock_nobody_releases() -> None:
            await asyncio.Event().wait()

        @pytest.mark.timeout(6)
        async def test_stuck() -> None:
            task = asyncio.create_task(wait_for_a_lock_nobody_releases(), name="the-stuck-one")
            await task
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(failed=1)
    # The report is the failed test's captured stderr, shown with its failure.
    report = result.stdout.str()
    assert "test_stuck.py::test_stuck (call) is close to its time limit" in report
    assert "name='the-stuck-one'" in report
    assert 'test_stuck.py", line 5, in wait_for_a_lock_nobody_releases' in report
