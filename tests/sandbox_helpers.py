"""Pieces the code-reward tests share: a sandbox that counts the jobs it runs."""

from __future__ import annotations

import threading

from rewards.sandbox import Sandbox


class CountingSandbox(Sandbox):
    """A two-worker sandbox that counts its jobs: how a test sees which completions really ran."""

    def __init__(self):
        super().__init__(workers=2)
        self.jobs = 0
        self.lock = threading.Lock()

    def run(self, job, timeout):
        with self.lock:
            self.jobs += 1
        return super().run(job, timeout)
