"""Job: any kind of long work in a QThread, observed from the GUI thread (no engine: a counting generator)."""
from __future__ import annotations

import app_conftest_helpers  # noqa: F401  (offscreen Qt, isolated settings; before Qt)

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from app.jobs.background import wait_for
from app.jobs.job import Job, PauseChanged


@dataclass
class Counting:
    """A kind of job: yields 0, 1, …, n-1; its result is the last number; raises ``fail`` after ``fail_after``
    numbers."""
    n: int
    fail: Exception | None = None
    fail_after: int = 0
    closed: list = field(default_factory=list)
    name: ClassVar[str] = "counting"
    shows_run: ClassVar[bool] = False

    def events(self) -> Iterator[int]:
        try:
            for i in range(self.n):
                if self.fail is not None and i == self.fail_after:
                    raise self.fail
                yield i
        finally:
            self.closed.append(True)       # the engine's clean-up runs when the job stops

    def result_of(self, event: Any) -> Any:
        return event if event == self.n - 1 else None


def _run(kind: Counting) -> tuple[Job, list]:
    job = Job(kind)
    job.start()
    seen: list = []
    assert wait_for(lambda: seen.extend(job.events()) or job.done, 10.0)
    job.wait(5000)
    return job, seen


def test_a_job_hands_over_every_event_then_its_outcome_and_result(qapp):
    job, seen = _run(Counting(5))
    assert seen == [0, 1, 2, 3, 4] and job.outcome == "finished" and job.result == 4 and job.error is None
    assert not job.is_running()


def test_a_failing_job_ends_failed_with_the_exception(qapp):
    kind = Counting(5, fail=ValueError("bad input: the run file names another model"), fail_after=2)
    job, seen = _run(kind)
    assert seen == [0, 1] and job.outcome == "failed" and job.result is None
    assert isinstance(job.error, ValueError) and "another model" in str(job.error) and kind.closed


def test_pause_holds_between_events_and_stop_closes_the_generator(qapp):
    kind = Counting(1000)
    job = Job(kind)
    job.pause()                                     # pauses at the first event
    job.start()
    seen: list = []
    assert wait_for(lambda: PauseChanged(True) in (seen.extend(job.events()) or seen), 10.0)
    held = len(seen)
    assert wait_for(lambda: False, 0.3) is False and not job.events()      # nothing moves while paused
    assert job.paused and held == 2                 # the first event, then the pause mark
    job.stop()                                      # stop also leaves the pause
    assert wait_for(lambda: seen.extend(job.events()) or job.done, 10.0)
    job.wait(5000)
    assert job.outcome == "stopped" and kind.closed == [True] and PauseChanged(False) in seen
    assert job.result is None and len(seen) == held + 1


def test_the_runner_runs_one_job_at_a_time_and_hands_each_its_events_then_its_end(qapp):
    from app.jobs.runner import JobRunner

    runner, seen, ended, freed = JobRunner(), [], [], []
    runner.freed.connect(lambda job: freed.append((job, runner.busy)))
    first = runner.start(Counting(10**9), seen.extend, ended.append)   # never ends before its stop, however loaded
    assert first is not None and runner.busy and runner.job is first
    assert runner.start(Counting(3), seen.extend, ended.append) is None          # busy: nothing else starts
    assert runner.pause() and runner.paused and not runner.pause()
    assert wait_for(lambda: runner.poll() is None and PauseChanged(True) in seen, 10.0)
    assert runner.resume() and not runner.paused and not runner.resume()
    assert runner.stop() and runner.stop_requested and not runner.stop()
    assert wait_for(lambda: runner.poll() is first, 10.0)
    assert ended == [first] and first.outcome == "stopped" and freed == [(first, False)] and not runner.busy
    assert runner.poll() is None and not runner.stop() and not runner.pause()
    second = runner.start(Counting(3), seen.extend, ended.append)                # idle again: the next one runs
    assert wait_for(lambda: runner.poll() is second, 10.0) and second.result == 2 and seen[-3:] == [0, 1, 2]
