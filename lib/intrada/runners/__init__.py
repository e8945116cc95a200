from .base import Runner, RunnerError

__all__ = ["Runner", "RunnerError"]
