"""An app that ends its own process with exit code 3 while it is imported."""

import os

print("exit app: exiting with code 3")
os._exit(3)
