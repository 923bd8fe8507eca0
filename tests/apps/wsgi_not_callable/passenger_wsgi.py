"""A startup file whose `application` is not callable."""

print("not-callable app: application is a number")

application = 42
