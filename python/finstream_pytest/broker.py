"""Starting and stopping `finstream broker` on port 0."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

_READY = re.compile(r"broker ready listen=(\S+)")


def finstream_binary():
    """The `finstream` executable: the one next to this Python (installed by the wheel), else PATH."""
    scripts = sysconfig.get_path("scripts")
    candidate = os.path.join(scripts, "finstream")
    if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("finstream")
    if found is None:
        raise RuntimeError("the finstream binary is not installed: pip install finstream")
    return found


class EmbeddedKafka:
    """A `finstream broker` on 127.0.0.1:0 with a temporary data directory."""

    def __init__(self, *extra_args, timeout=30.0):
        self.data_dir = tempfile.mkdtemp(prefix="finstream-kafka-")
        self.log = []
        self._proc = subprocess.Popen(
            [finstream_binary(), "broker", "--listen", "127.0.0.1:0", "--http", "off",
             "--data-dir", self.data_dir, *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.bootstrap_servers = self._wait_ready(timeout)
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self._proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = _READY.search(line)
            if m:
                return m.group(1)
        self.stop()
        raise RuntimeError("finstream broker did not start:\n" + "".join(self.log))

    def _drain(self):
        for line in self._proc.stderr:
            self.log.append(line)

    def stop(self):
        """Stops the broker (SIGTERM, then SIGKILL) and deletes its data."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":  # python -m finstream_pytest.broker: print a bootstrap and serve until Ctrl-C
    with EmbeddedKafka() as k:
        print(k.bootstrap_servers, flush=True)
        try:
            k._proc.wait()
        except KeyboardInterrupt:
            sys.exit(0)
