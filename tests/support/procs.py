"""What the Python test scripts share: a child process started and watched for its ready line."""

import re
import subprocess
import threading


class Proc:
    """A child process whose stdout is scanned for a line matching `pattern`."""

    def __init__(self, argv, env, pattern, what):
        self.what = what
        self.lines: list[str] = []
        self.p = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.match = None
        found = threading.Event()

        def pump():
            assert self.p.stdout is not None
            for line in self.p.stdout:
                self.lines.append(line)
                if self.match is None:
                    m = re.search(pattern, line)
                    if m:
                        self.match = m
                        found.set()

        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError(f"{what} did not start:\n" + "".join(self.lines))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
