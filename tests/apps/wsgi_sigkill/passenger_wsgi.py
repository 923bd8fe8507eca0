"""An app whose process is killed by SIGKILL while it is imported."""

import os
import signal

print("sigkill app: killing myself")
os.kill(os.getpid(), signal.SIGKILL)
