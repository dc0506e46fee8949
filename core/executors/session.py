"""Session steps: create, feed, kill or detach a GNU screen or tmux session, then end.

The session outlives the step (and the run): the step is the action, not the session.
"""

from __future__ import annotations

from pathlib import Path

from core.executors.base import LaunchContext, OnExit, Outcome
from core.recipe import Step
from core.steplog import StepLog
from core.workers import Workers


class SessionExecution:
    pid = None
    native_thread_id = None
    kill_abandons = True  # its action runs on a runner thread

    def __init__(
        self,
        step: Step,
        *,
        run_dir: Path,
        env: dict[str, str],
        cwd: Path | None,
        log: StepLog,
        workers: Workers,
        on_exit: OnExit,
    ) -> None:
        self.step = step
        self.run_dir = run_dir
        self.env = env
        self.cwd = cwd
        self.log = log
        self.workers = workers
        self.on_exit = on_exit

    @classmethod
    def create(
        cls, step: Step, log: StepLog, attempt: int, context: LaunchContext, on_exit: OnExit
    ) -> SessionExecution:
        launcher = context.launcher
        env = launcher.session_env(step)
        return cls(
            step,
            run_dir=launcher.run_dir,
            env=env,
            cwd=launcher.session_cwd(step),
            log=log,
            workers=context.workers,
            on_exit=on_exit,
        )

    def start(self) -> None:
        self.workers.submit(self._run)

    def _run(self) -> None:
        from core.sessions.base import SessionError
        from core.sessions.step import run_session_step

        step = self.step
        try:
            run_session_step(
                backend=step.backend,
                action=step.action or "",
                session=step.session or "",
                command=step.command,
                log=step.log,
                socket=step.socket,
                run_dir=self.run_dir,
                step_name=step.name,
                write=lambda text: self.log.write_text(text.rstrip("\n") + "\n"),
                env=self.env,
                cwd=self.cwd,
            )
            outcome = Outcome(0)
        except SessionError as exc:
            self.log.write_text(f"error: {exc}\n")
            outcome = Outcome(1, error=str(exc))
        except Exception as exc:  # a bug or an OS error must fail the step, not the runner
            self.log.write_text(f"error: {type(exc).__name__}: {exc}\n")
            outcome = Outcome(1, error=f"{type(exc).__name__}: {exc}")
        self.on_exit(outcome)

    def stop(self, sig: int) -> None:
        pass  # session actions are short; they finish on their own

    def kill(self) -> None:
        pass
