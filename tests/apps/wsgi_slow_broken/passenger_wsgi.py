"""An app that takes about a second to import, then fails: requests pile up meanwhile."""

import time

print("slow broken app: sleeping before failing")
time.sleep(1)
raise RuntimeError("slow failure after a second")
