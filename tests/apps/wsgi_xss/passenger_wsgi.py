"""An app whose output and exception message carry HTML that must never reach a page raw."""

print("xss app: <script>alert(1)</script>")
raise RuntimeError("<script>alert(1)</script> in the exception")
