"""An app that never finishes importing."""

import time

print("hanging app: sleeping forever")
while True:
    time.sleep(1)
